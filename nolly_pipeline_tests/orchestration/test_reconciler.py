"""The reconciler repairs rows whose runs ended without writing back."""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from dagster import DagsterRun, DagsterRunStatus

from nolly_pipeline.db.job_rows import RunIdentity
from nolly_pipeline.db.tables import jobs, notifications
from nolly_pipeline.orchestration.reconciler import ReconcilerPolicy, reconcile
from nolly_pipeline_tests.fakes.replicate_api import Behavior
from nolly_pipeline_tests.fakes.versions import ROTO_VERSION
from nolly_pipeline_tests.media import tiny_video
from nolly_pipeline_tests.orchestration.conftest import Pipeline
from nolly_pipeline_tests.orchestration.test_pipeline import insert_row

LATER = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(hours=1)


def add_run(p: Pipeline, status: DagsterRunStatus, job_id: uuid.UUID, attempt: int) -> str:
    run_id = str(uuid.uuid4())
    p.instance.add_run(DagsterRun(job_name="roto_job", run_id=run_id, status=status,
                                  tags={"nolly/job_id": str(job_id), "nolly/attempt": str(attempt)}))
    return run_id


def running_row(p: Pipeline, user: uuid.UUID, run_status: DagsterRunStatus | None) -> uuid.UUID:
    job_id = insert_row(p, "roto", {"file_url": "s3://vfx-assets/u/a.mp4"}, user)
    (row,) = p.store.claim_dispatchable(10)
    run_id = add_run(p, run_status, job_id, row.attempt) if run_status else str(uuid.uuid4())
    p.store.start_run(job_id, RunIdentity(run_id, row.attempt))
    return job_id


def test_running_rows_of_dead_runs_are_failed(pipeline: Pipeline, user_id: uuid.UUID) -> None:
    canceled = running_row(pipeline, user_id, DagsterRunStatus.CANCELED)
    failed = running_row(pipeline, user_id, DagsterRunStatus.FAILURE)
    missing = running_row(pipeline, user_id, None)
    alive = running_row(pipeline, user_id, DagsterRunStatus.STARTED)
    repairs = reconcile(pipeline.instance, pipeline.store, ReconcilerPolicy())
    assert (repairs.settled_failed, repairs.requeued) == (1, 2)
    assert pipeline.store.get(canceled).error_message == "processing was canceled"
    assert len(pipeline.store.notifications_for(canceled)) == 1
    # A worker that died is an infrastructure failure: back to the queue, no notification yet.
    for job_id, reason in ((failed, "processing stopped unexpectedly"), (missing, "processing was interrupted")):
        row = pipeline.store.get(job_id)
        assert row.status == "pending" and row.error_message == f"{reason}; retrying"
        assert pipeline.store.notifications_for(job_id) == []
    assert pipeline.store.get(alive).status == "running"
    assert reconcile(pipeline.instance, pipeline.store, ReconcilerPolicy()).total == 0  # idempotent
    assert sorted(r.run_key for r in pipeline.tick()) == sorted([f"{failed}:2", f"{missing}:2"])


def test_claim_without_run_is_released_and_redispatched(pipeline: Pipeline, user_id: uuid.UUID) -> None:
    job_id = insert_row(pipeline, "roto", {"file_url": "s3://vfx-assets/u/a.mp4"}, user_id)
    pipeline.store.claim_dispatchable(10)  # the daemon died before creating the run
    assert reconcile(pipeline.instance, pipeline.store, ReconcilerPolicy()).total == 0  # within grace
    repairs = reconcile(pipeline.instance, pipeline.store, ReconcilerPolicy(), now=LATER)
    assert repairs.released == 1
    (request,) = pipeline.tick()
    assert request.run_key == f"{job_id}:2"


def test_claim_whose_run_was_canceled_in_the_queue_is_failed(pipeline: Pipeline, user_id: uuid.UUID) -> None:
    job_id = insert_row(pipeline, "roto", {"file_url": "s3://vfx-assets/u/a.mp4"}, user_id)
    (row,) = pipeline.store.claim_dispatchable(10)
    add_run(pipeline, DagsterRunStatus.CANCELED, job_id, row.attempt)
    repairs = reconcile(pipeline.instance, pipeline.store, ReconcilerPolicy(), now=LATER)
    assert repairs.settled_failed == 1
    assert pipeline.store.get(job_id).error_message == "processing was canceled before it started"


def test_successful_run_whose_hook_never_wrote_is_settled_done(pipeline: Pipeline, user_id: uuid.UUID) -> None:
    pipeline.fake.set_behavior(ROTO_VERSION, Behavior(starting=0, processing=0))
    url = pipeline.upload_input("clip.mp4", tiny_video(), user=user_id)
    job_id = insert_row(pipeline, "roto", {"file_url": url}, user_id)
    (request,) = pipeline.tick()
    result = pipeline.execute(request)
    expected = pipeline.store.get(job_id).output_data
    # Undo the hook's write, as if the database had been unreachable at that moment.
    with pipeline.store.engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(status="running", output_data=None))
        conn.execute(sa.delete(notifications).where(notifications.c.job_id == job_id))
    repairs = reconcile(pipeline.instance, pipeline.store, ReconcilerPolicy())
    assert repairs.settled_done == 1
    row = pipeline.store.get(job_id)
    assert row.status == "done" and row.output_data == expected and row.dagster_run_id == result.run_id
    assert [n["kind"] for n in pipeline.store.notifications_for(job_id)] == ["job_done"]


def test_silent_worker_is_stopped_and_requeued_then_gives_up(pipeline: Pipeline, user_id: uuid.UUID) -> None:
    """A run Dagster still thinks is STARTED but whose heartbeat stopped: the worker died."""
    job_id = running_row(pipeline, user_id, DagsterRunStatus.STARTED)
    policy = ReconcilerPolicy(heartbeat_timeout=dt.timedelta(seconds=60))
    assert reconcile(pipeline.instance, pipeline.store, policy).total == 0  # heartbeat is fresh
    run_id = pipeline.store.get(job_id).dagster_run_id
    repairs = reconcile(pipeline.instance, pipeline.store, policy, now=LATER)
    assert repairs.requeued == 1
    assert pipeline.instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE
    # Use up the attempt budget: attempts 2 and 3 die the same way, then it fails for good.
    for attempt in (2, 3):
        (req,) = pipeline.tick()
        assert req.run_key == f"{job_id}:{attempt}"
        dead = add_run(pipeline, DagsterRunStatus.STARTED, job_id, attempt)
        pipeline.store.start_run(job_id, RunIdentity(dead, attempt))
        reconcile(pipeline.instance, pipeline.store, policy, now=LATER)
    row = pipeline.store.get(job_id)
    assert row.status == "failed" and row.error_message == "processing stopped responding (gave up after 3 attempts)"
    assert len(pipeline.store.notifications_for(job_id)) == 1


def test_user_retry_beyond_the_budget_is_refused(pipeline: Pipeline, user_id: uuid.UUID) -> None:
    job_id = insert_row(pipeline, "roto", {"file_url": "s3://vfx-assets/u/a.mp4"}, user_id)
    with pipeline.store.engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(attempt=3, status="pending"))
    assert pipeline.tick() == []
    row = pipeline.store.get(job_id)
    assert row.status == "failed" and "used all 3 attempts" in row.error_message
