"""Getting a job's input file onto local disk, safely.

The download op calls :func:`acquire_input`; everything about where inputs may come from
and how big they may be is decided here, not in the Dagster glue.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nolly_pipeline.storage.objects import ObjectStore
from nolly_pipeline.validation import JobSpec


@dataclass(frozen=True)
class AcquiredInput:
    path: Path
    size: int
    # Where it came from, for run metadata (never contains credentials).
    origin: str


def acquire_input(spec: JobSpec, objects: ObjectStore, dest_dir: Path) -> AcquiredInput:
    """Copy the job's input object into ``dest_dir``."""
    dest = dest_dir / spec.source.filename
    size = objects.download(spec.source.bucket, spec.source.key, dest)
    return AcquiredInput(path=dest, size=size, origin=f"{spec.source.bucket}/{spec.source.key}")
