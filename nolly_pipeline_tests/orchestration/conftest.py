"""A whole pipeline environment on real parts: PostgreSQL, moto's S3 server, fake Replicate."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from dagster import DagsterInstance, Definitions, RunRequest, build_sensor_context

from nolly_pipeline.config import Settings
from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline.definitions import build_definitions
from nolly_pipeline.storage.objects import S3ObjectStore
from nolly_pipeline_tests.fakes.replicate_api import FakeReplicate


@dataclass
class Pipeline:
    settings: Settings
    defs: Definitions
    instance: DagsterInstance
    store: JobStore
    s3: S3ObjectStore
    fake: FakeReplicate

    def upload_input(self, name: str, data: bytes, bucket: str = "vfx-assets", user: uuid.UUID | None = None) -> str:
        key = f"{user or 'u'}/{uuid.uuid4().hex[:8]}-{name}"
        path = self.settings.work_dir.parent / "upload.tmp"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.s3.upload(path, bucket, key)
        return f"s3://{bucket}/{key}"

    def tick(self) -> list[RunRequest]:
        """Evaluate the dispatch sensor once, as the daemon would, and register partitions."""
        sensor = self.defs.get_sensor_def("pending_jobs_sensor")
        resources = self.defs.get_repository_def().get_top_level_resources()
        with build_sensor_context(instance=self.instance, resources=resources) as ctx:
            result = sensor(ctx)
        requests = list(getattr(result, "run_requests", None) or [])
        for req in getattr(result, "dynamic_partitions_requests", None) or []:
            self.instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        return requests

    def execute(self, request: RunRequest) -> Any:
        job = self.defs.get_job_def(request.job_name)  # type: ignore[arg-type]
        return job.execute_in_process(
            instance=self.instance, partition_key=request.partition_key, tags=request.tags, raise_on_error=False
        )


def pipeline_env(database_url: str, s3_endpoint: str, fake: FakeReplicate, home: Path) -> dict[str, str]:
    """The environment of a pipeline on these services, with Replicate as every type's backend."""
    return {
        "DAGSTER_HOME": str(home),
        "NOLLY_DATABASE_URL": database_url,
        "NOLLY_STORAGE": "s3",
        "NOLLY_S3_ENDPOINT_URL": s3_endpoint,
        "REPLICATE_API_TOKEN": "test-token",
        "REPLICATE_BASE_URL": fake.base_url,
        "NOLLY_REPLICATE_POLL_SECONDS": "0.05",
        "NOLLY_REPLICATE_MODEL_COLOR_GRADE": "studio/grade",
        "NOLLY_REPLICATE_INPUT_COLOR_GRADE": '{"file_input": "input_video"}',
        "NOLLY_INTERMEDIATE_BUCKET": f"inter-{uuid.uuid4().hex[:8]}",
    }


@contextmanager
def running_pipeline(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], store: JobStore, s3_endpoint: str, fake: FakeReplicate
) -> Iterator[Pipeline]:
    """Set ``env``, create the buckets and yield a pipeline on an ephemeral Dagster instance."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings.from_env()
    s3 = S3ObjectStore.connect(s3_endpoint, "us-east-1")
    s3.ensure_buckets(settings.buckets)
    with DagsterInstance.ephemeral() as instance:
        yield Pipeline(settings, build_definitions(settings), instance, store, s3, fake)


@pytest.fixture
def pipeline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pg_store: JobStore, postgres_url: str,
    s3_endpoint: str, fake_replicate: FakeReplicate,
) -> Iterator[Pipeline]:
    env = pipeline_env(postgres_url, s3_endpoint, fake_replicate, tmp_path / "dagster_home")
    with running_pipeline(monkeypatch, env, pg_store, s3_endpoint, fake_replicate) as p:
        yield p
