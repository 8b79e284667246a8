"""``python -m moto.server`` with one fix so ECS ``RunTask`` accepts Fargate task definitions.

moto 5.2 sums container-level ``memory`` to place tasks on EC2 container instances and fails
(HTTP 500) when a container sets none. Fargate definitions size the task, not the container,
which is exactly what EcsRunLauncher registers; placement does not apply to Fargate anyway,
so a missing container memory counts as 0 here. Everything else is moto unchanged.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

from moto.ecs.models import EC2ContainerServiceBackend
from moto.server import main

_original = EC2ContainerServiceBackend._calculate_task_resource_requirements
_MEMORY_KEYS = ("memory", "memoryReservation", "Memory", "MemoryReservation")


def _fargate_tolerant(task_definition: Any) -> dict[str, Any]:
    """Count a container without memory as 0 MiB, on a copy: the stored definition is untouched."""
    containers = [
        c if any(k in c for k in _MEMORY_KEYS) else {**c, "memoryReservation": 0}
        for c in task_definition.container_definitions
    ]
    return _original(SimpleNamespace(container_definitions=containers))


EC2ContainerServiceBackend._calculate_task_resource_requirements = staticmethod(_fargate_tolerant)  # type: ignore[method-assign]

if __name__ == "__main__":
    main(sys.argv[1:])
