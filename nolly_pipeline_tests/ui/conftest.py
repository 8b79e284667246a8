"""The studio every UI test drives: a real ``dagster-webserver`` and ``dagster-daemon`` on
PostgreSQL, moto's S3 server and the Replicate fake, started once for the package."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from nolly_pipeline.config import Settings
from nolly_pipeline.db import migrate
from nolly_pipeline.db.engine import get_engine
from nolly_pipeline.db.job_rows import JobRow
from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline.storage.objects import S3ObjectStore
from nolly_pipeline_tests import services
from nolly_pipeline_tests.e2e.daemon import running_daemon, wait_until, write_instance_yaml
from nolly_pipeline_tests.fakes.replicate_api import Behavior, FakeReplicate
from nolly_pipeline_tests.fakes.versions import AUDIO_VERSION, ROTO_VERSION
from nolly_pipeline_tests.orchestration.conftest import pipeline_env
from nolly_pipeline_tests.seed import insert_job
from nolly_pipeline_tests.ui import webserver as ui
from nolly_pipeline_tests.ui.webserver import Webserver, running_webserver

FINAL = ("done", "failed")
RUN_FINAL = ("SUCCESS", "FAILURE", "CANCELED")
GRADE_MODEL = "studio/grade"  # pipeline_env's colour-grade model on the fake
# Seconds from launch to the row settled, per path: printed for the closing note.
TIMINGS: dict[str, list[float]] = {}


@dataclass
class Studio:
    server: Webserver
    store: JobStore
    s3: S3ObjectStore
    fake: FakeReplicate
    logs: Path
    user: uuid.UUID = field(default_factory=uuid.uuid4)

    def submit(self, job_type: str, data: bytes, ext: str, settings: dict[str, Any] | None = None) -> uuid.UUID:
        """Upload an input and insert its row with the frontend's SQL."""
        bucket = "audio-uploads" if job_type == "audio-clean" else "vfx-assets"
        key = f"{self.user}/{uuid.uuid4().hex[:8]}.{ext}"
        path = self.logs / "upload.tmp"
        path.write_bytes(data)
        self.s3.upload(path, bucket, key)
        with self.store.engine.begin() as conn:
            return insert_job(conn, job_type, {"file_url": f"s3://{bucket}/{key}", "settings": settings or {}}, self.user)

    def row(self, job_id: uuid.UUID) -> JobRow:
        row = self.store.get(job_id)
        assert row is not None
        return row

    def kinds(self, job_id: uuid.UUID) -> list[str]:
        return [n["kind"] for n in self.store.notifications_for(job_id)]

    def diagnostics(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(self.logs.glob("*.log")))

    def wait_final(self, job_id: uuid.UUID, attempt: int, run_id: str | None = None, timeout: float = 120) -> JobRow:
        """Wait until the row reaches a final state at ``attempt`` (written by ``run_id``, if given)."""

        def final() -> bool:
            row = self.row(job_id)
            return row.status in FINAL and row.attempt == attempt and run_id in (None, row.dagster_run_id)

        wait_until(final, timeout=timeout, interval=0.2, what=f"job {job_id} final at attempt {attempt}",
                   on_timeout=self.diagnostics)
        return self.row(job_id)

    def settled(self, path: str, job_id: uuid.UUID, run_id: str, attempt: int, started: float) -> JobRow:
        """Wait for the row; record seconds from launch; check it was final by its run's end + 5 s."""
        row = self.wait_final(job_id, attempt, run_id)
        TIMINGS.setdefault(path, []).append(time.monotonic() - started)
        wait_until(lambda: ui.run(self.server, run_id)["status"] in RUN_FINAL, timeout=60, interval=0.2,
                   what=f"run {run_id} finished", on_timeout=self.diagnostics)
        # The hooks write the row inside the run: by the time Dagster says the run ended, the
        # row must already be final (5 s covers the polling of both sides).
        assert self.row(job_id).status in FINAL
        return row


@pytest.fixture(scope="package")
def studio(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Studio]:
    tmp = tmp_path_factory.mktemp("ui")
    with (
        services.postgres_database("nolly_ui_jobs") as jobs_url,
        services.postgres_database("nolly_ui_dagster") as dagster_url,
        FakeReplicate(token="test-token") as fake,
    ):
        engine = get_engine(jobs_url)
        migrate.upgrade(engine)
        home = tmp / "dagster_home"
        write_instance_yaml(home, dagster_url)
        env = {
            **pipeline_env(jobs_url, s3_endpoint, fake, home),
            "NOLLY_SENSOR_INTERVAL_SECONDS": "1",
            "NOLLY_REPLICATE_POLL_SECONDS": "0.1",
        }
        s3 = S3ObjectStore.connect(s3_endpoint, "us-east-1")
        s3.ensure_buckets(Settings.from_env(env).buckets)
        for model in (GRADE_MODEL, ROTO_VERSION, AUDIO_VERSION):
            fake.set_behavior(model, Behavior(starting=0, processing=1))
        with running_daemon(env, tmp / "daemon.log"), running_webserver(env, tmp / "webserver.log") as server:
            yield Studio(server, JobStore(engine), s3, fake, tmp)
    if TIMINGS:
        print("\nseconds from launch to the row settled:")
        for path, values in TIMINGS.items():
            print(f"  {path}: " + ", ".join(f"{v:.1f}" for v in values))
