"""Every way the Dagster UI launches work, driven through the webserver's own GraphQL API.

A real ``dagster-webserver`` and a real ``dagster-daemon`` on PostgreSQL, moto's S3 server
and the Replicate fake; rows are inserted with the frontend's SQL. For each launch path the
row must settle (done or failed) with exactly one notification per terminal transition,
attempts counted as the README says, and no run left to the reconciler: the row is final
within 5 s of its run ending, whichever job the asset ran in.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

from nolly_pipeline.config import Settings
from nolly_pipeline.db import migrate
from nolly_pipeline.db.engine import get_engine
from nolly_pipeline.db.jobs import JobRow, JobStore
from nolly_pipeline.storage.objects import S3ObjectStore
from nolly_pipeline_tests import services
from nolly_pipeline_tests.e2e.daemon import running_daemon, wait_until, write_instance_yaml
from nolly_pipeline_tests.fakes.replicate_api import Behavior, FakeReplicate
from nolly_pipeline_tests.fakes.versions import AUDIO_VERSION, ROTO_VERSION
from nolly_pipeline_tests.media import tiny_video, tiny_wav
from nolly_pipeline_tests.orchestration.conftest import pipeline_env
from nolly_pipeline_tests.seed import insert_job, request_cancel
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

    def submit(self, job_type: str, data: bytes, ext: str) -> uuid.UUID:
        """Upload an input and insert its row with the frontend's SQL."""
        bucket = "audio-uploads" if job_type == "audio-clean" else "vfx-assets"
        key = f"{self.user}/{uuid.uuid4().hex[:8]}.{ext}"
        path = self.logs / "upload.tmp"
        path.write_bytes(data)
        self.s3.upload(path, bucket, key)
        with self.store.engine.begin() as conn:
            return insert_job(conn, job_type, {"file_url": f"s3://{bucket}/{key}", "settings": {}}, self.user)

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


@pytest.fixture(scope="module")
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


@pytest.fixture(scope="module")
def finished_grades(studio: Studio) -> list[uuid.UUID]:
    """(a) Two colour-grade jobs through the sensor, as the frontend submits them."""
    started = time.monotonic()
    ids = [studio.submit("color-grade", tiny_video(3 + i), "mp4") for i in range(2)]
    for job_id in ids:
        row = studio.wait_final(job_id, attempt=1)
        assert row.status == "done", row.error_message
        assert studio.kinds(job_id) == ["job_done"]
    TIMINGS["(a) sensor"] = [time.monotonic() - started]
    return ids


def new_attempt_done(studio: Studio, path: str, job_ids: list[uuid.UUID], launch: Callable[[], str | None]) -> None:
    """A launch from the UI: one more attempt each, a new output, one more notification."""
    before = {job_id: (studio.row(job_id), studio.kinds(job_id)) for job_id in job_ids}
    started = time.monotonic()
    run_id = launch()
    for job_id, (old, kinds) in before.items():
        if run_id is None:  # a backfill: its runs are the daemon's to create
            row = studio.wait_final(job_id, old.attempt + 1, timeout=180)
            TIMINGS.setdefault(path, []).append(time.monotonic() - started)
        else:
            row = studio.settled(path, job_id, run_id, old.attempt + 1, started)
            assert row.dagster_run_id == run_id
        assert row.status == "done", row.error_message
        assert row.output_data["output_url"] != old.output_data["output_url"]
        assert f"/a{row.attempt}/" in row.output_data["storage_path"]
        assert studio.kinds(job_id) == kinds + ["job_done"]


def test_materialize_one_partition_from_the_asset_page(studio: Studio, finished_grades: list[uuid.UUID]) -> None:
    """(b) "Materialize" of one partition: a run of ``__ASSET_JOB``, which has no job hooks."""
    job_id = finished_grades[0]
    new_attempt_done(studio, "(b) Materialize", [job_id],
                     lambda: ui.materialize(studio.server, "color_grade", str(job_id)))


def test_launchpad_run_of_the_type_job(studio: Studio, finished_grades: list[uuid.UUID]) -> None:
    """(c) The launchpad of ``color_grade_job`` with a partition chosen."""
    job_id = finished_grades[1]
    new_attempt_done(studio, "(c) launchpad", [job_id],
                     lambda: ui.launch(studio.server, "color_grade_job", str(job_id)))


def test_backfill_of_selected_partitions(studio: Studio, finished_grades: list[uuid.UUID]) -> None:
    """(d) "Launch backfill" of both partitions: an asset backfill, runs of ``__ASSET_JOB``."""
    backfill: list[str] = []

    def launch() -> None:
        backfill.append(ui.backfill(studio.server, "color_grade", [str(j) for j in finished_grades]))

    new_attempt_done(studio, "(d) backfill", finished_grades, launch)
    runs = ui.backfill_runs(studio.server, backfill[0])
    assert {studio.row(j).dagster_run_id for j in finished_grades} <= {r["runId"] for r in runs}


def test_reexecute_from_failure_resumes_the_attempt(studio: Studio) -> None:
    """(e) A run failed in ``predict``; "Re-execute from failure" continues the same attempt
    from the stored download, after the operator fixed the cause."""
    studio.fake.set_behavior(ROTO_VERSION, Behavior(starting=0, processing=0, final_status="failed", error="GPU lost"))
    job_id = studio.submit("roto", tiny_video(6), "mp4")
    failed = studio.wait_final(job_id, attempt=1)
    assert failed.status == "failed" and "GPU lost" in (failed.error_message or "")
    assert studio.kinds(job_id) == ["job_failed"]
    # The operator sees the run failed in the UI, fixes the cause, then re-executes.
    wait_until(lambda: ui.run(studio.server, failed.dagster_run_id or "")["status"] == "FAILURE", timeout=60,
               interval=0.2, what="failed run recorded", on_timeout=studio.diagnostics)
    studio.fake.set_behavior(ROTO_VERSION, Behavior(starting=0, processing=1))

    started = time.monotonic()
    run_id = ui.reexecute(studio.server, failed.dagster_run_id or "", "FROM_FAILURE")
    row = studio.settled("(e) re-execute from failure", job_id, run_id, 1, started)
    assert row.status == "done" and row.attempt == 1, row.error_message
    steps = {s["stepKey"] for s in ui.run(studio.server, run_id)["stepStats"]}
    assert steps == {"roto.predict", "roto.publish"}  # the download was not fetched again
    assert studio.kinds(job_id) == ["job_failed", "job_done"]


def test_reexecute_all_is_a_new_attempt(studio: Studio, finished_grades: list[uuid.UUID]) -> None:
    """(f) "Re-execute all" of a finished run: every step again, as a new attempt."""
    job_id = finished_grades[0]
    parent = studio.row(job_id).dagster_run_id or ""
    new_attempt_done(studio, "(f) re-execute all", [job_id], lambda: ui.reexecute(studio.server, parent, "ALL_STEPS"))


def test_a_second_launch_of_a_running_job_is_refused(studio: Studio) -> None:
    """Materialize while the sensor's run still works: the second run fails with a clear
    message and the running attempt goes on untouched (until the user cancels it)."""
    studio.fake.set_behavior(AUDIO_VERSION, Behavior(never_finishes=True))
    try:
        job_id = studio.submit("audio-clean", tiny_wav(), "wav")
        wait_until(lambda: studio.row(job_id).status == "running", timeout=60, interval=0.2,
                   what="sensor run working", on_timeout=studio.diagnostics)
        first_run = studio.row(job_id).dagster_run_id
        second = ui.materialize(studio.server, "audio_clean", str(job_id))
        wait_until(lambda: ui.run(studio.server, second)["status"] in RUN_FINAL, timeout=90, interval=0.2,
                   what="second run finished", on_timeout=studio.diagnostics)
        assert ui.run(studio.server, second)["status"] == "FAILURE"
        assert any("already being processed" in m for m in ui.step_failures(studio.server, second))
        during = studio.row(job_id)
        assert during.status == "running" and during.attempt == 1 and during.dagster_run_id == first_run
        request_cancel(studio.store.engine, job_id)
        row = studio.wait_final(job_id, attempt=1, run_id=first_run)
        assert row.status == "failed" and row.error_message == "canceled by user"
        assert studio.kinds(job_id) == ["job_failed"]
    finally:
        studio.fake.set_behavior(AUDIO_VERSION, Behavior(starting=0, processing=1))


def test_no_path_burned_attempts_or_gave_up(studio: Studio, finished_grades: list[uuid.UUID]) -> None:
    """After every path: sensor 1 + Materialize/launchpad 1 + backfill 1 (+ re-execute all 1)."""
    attempts = [studio.row(j).attempt for j in finished_grades]
    assert attempts == [4, 3]
    for job_id in finished_grades:
        row = studio.row(job_id)
        assert row.status == "done" and "gave up" not in (row.error_message or "")
        assert studio.kinds(job_id) == ["job_done"] * row.attempt
