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
from typing import Callable

import pytest

from nolly_pipeline.processing.checks import CHECKS
from nolly_pipeline_tests.e2e.daemon import wait_until
from nolly_pipeline_tests.fakes.replicate_api import Behavior
from nolly_pipeline_tests.fakes.versions import AUDIO_VERSION, ROTO_VERSION
from nolly_pipeline_tests.media import tiny_video, tiny_wav
from nolly_pipeline_tests.seed import request_cancel
from nolly_pipeline_tests.ui import webserver as ui
from nolly_pipeline_tests.ui.conftest import RUN_FINAL, TIMINGS, Studio


@pytest.fixture(scope="module")
def finished_grades(studio: Studio) -> list[uuid.UUID]:
    """(a) Two colour-grade jobs through the sensor, as the frontend submits them."""
    started = time.monotonic()
    ids = [studio.submit("color-grade", tiny_video(3 + i), "mp4") for i in range(2)]
    for job_id in ids:
        row = studio.wait_final(job_id, attempt=1)
        assert row.status == "done", row.error_message
        assert studio.kinds(job_id) == ["job_done"]
        assert_checks_evaluated(studio, "color_grade", row.dagster_run_id or "")
    TIMINGS["(a) sensor"] = [time.monotonic() - started]
    return ids


def assert_checks_evaluated(studio: Studio, asset: str, run_id: str) -> None:
    """Every check of the asset ran in this run. The fake echoes its input behind a prefix, so
    the output does not decode: each check failed, as a warning, and the job is still done."""
    evaluated = ui.checks_of_run(studio.server, asset, run_id)
    assert set(evaluated) == set(CHECKS[asset.replace("_", "-")])
    for name, execution in evaluated.items():
        assert execution["status"] == "FAILED" and execution["evaluation"]["severity"] == "WARN", name


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
        assert_checks_evaluated(studio, "color_grade", row.dagster_run_id or "")


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
    assert_checks_evaluated(studio, "roto", run_id)
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
