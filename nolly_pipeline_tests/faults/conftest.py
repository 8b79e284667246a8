"""Fixtures of the fault tests: the in-process pipeline, and a daemon stack for the slow ones."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline.storage.objects import S3ObjectStore
from nolly_pipeline_tests import services
from nolly_pipeline_tests.faults.harness import Daemon, daemon_env, write_instance_yaml
from nolly_pipeline_tests.fakes.replicate_api import FakeReplicate
from nolly_pipeline_tests.orchestration.conftest import pipeline  # noqa: F401 - re-exported fixture


@dataclass
class Stack:
    """A daemon deployment on real services; ``daemon()`` makes (not starts) a daemon."""

    tmp: Path
    home: Path
    store: JobStore
    s3: S3ObjectStore
    fake: FakeReplicate
    env: dict[str, str]
    daemons: list[Daemon] = field(default_factory=list)

    def daemon(self, name: str = "daemon", **env: str) -> Daemon:
        d = Daemon({**self.env, **env}, self.tmp / f"{name}.log")
        self.daemons.append(d)
        return d

    def input_url(self, key: str) -> str:
        return f"s3://vfx-assets/{key}"


@pytest.fixture
def make_stack(
    tmp_path: Path, s3_endpoint: str, fake_replicate: FakeReplicate
) -> Iterator[Callable[..., Stack]]:
    """``make_stack(store, jobs_url, instance_extra={}, **env)``; Dagster storage on PostgreSQL."""
    stacks: list[Stack] = []
    with services.postgres_database("nolly_dagster") as dagster_url:

        def make(store: JobStore, jobs_url: str, instance_extra: dict[str, Any] | None = None, **env: str) -> Stack:
            home = tmp_path / f"dagster_home{len(stacks)}"
            write_instance_yaml(home, dagster_url, instance_extra)
            intermediates = f"inter-{uuid.uuid4().hex[:8]}"
            s3 = S3ObjectStore.connect(s3_endpoint, "us-east-1")
            s3.ensure_buckets(("vfx-assets", "audio-uploads", "outputs", intermediates))
            stack = Stack(tmp_path, home, store, s3, fake_replicate,
                          daemon_env(home, jobs_url, s3_endpoint, fake_replicate, intermediates, **env))
            stacks.append(stack)
            return stack

        try:
            yield make
        finally:
            for stack in stacks:
                for d in stack.daemons:
                    d.stop()
