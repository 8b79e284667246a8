"""The job store's dispatch, ownership and fencing rules, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid

import pytest

from nolly_pipeline.db.job_rows import RunIdentity
from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline.db.tables import jobs, notifications
from nolly_pipeline.errors import StaleRunError
from nolly_pipeline_tests.seed import request_cancel

INPUT = {"file_url": "s3://vfx-assets/u/clip.mp4", "settings": {}}


def sensor_run(run_id: str, attempt: int) -> RunIdentity:
    return RunIdentity(run_id=run_id, attempt=attempt)


def test_claim_takes_each_new_row_once_and_bumps_attempt(store: JobStore, user_id: uuid.UUID) -> None:
    ids = [store.insert_job("roto", INPUT, user_id) for _ in range(5)]
    first = store.claim_dispatchable(3)
    second = store.claim_dispatchable(10)
    assert len(first) == 3 and len(second) == 2
    assert {r.id for r in first + second} == set(ids)
    assert {r.attempt for r in first + second} == {1}
    assert store.claim_dispatchable(10) == []


def test_retry_by_frontend_makes_a_new_attempt(store: JobStore, user_id: uuid.UUID) -> None:
    job_id = store.insert_job("roto", INPUT, user_id)
    (row,) = store.claim_dispatchable(10)
    store.start_run(job_id, sensor_run("r1", row.attempt))
    assert store.finish_failed(job_id, "r1", "model failed")
    # The frontend's retry button: status back to pending, nothing else.
    with store.engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(status="pending"))
    (again,) = store.claim_dispatchable(10)
    assert again.attempt == 2 and again.error_message is None and again.completed_at is None


def test_terminal_write_is_fenced_and_notifies_once(store: JobStore, user_id: uuid.UUID) -> None:
    job_id = store.insert_job("color-grade", INPUT, user_id)
    (row,) = store.claim_dispatchable(10)
    store.start_run(job_id, sensor_run("r1", row.attempt))
    assert store.finish_done(job_id, "r1", {"output_url": "u", "storage_path": "p"})
    assert not store.finish_done(job_id, "r1", {"output_url": "u", "storage_path": "p"})
    assert not store.finish_failed(job_id, "r1", "late failure")
    final = store.get(job_id)
    assert final is not None and final.status == "done" and final.output_data["output_url"] == "u"
    assert final.completed_at is not None and final.dispatched_at is None
    notes = store.notifications_for(job_id)
    assert [(n["kind"], n["user_id"], n["read"]) for n in notes] == [("job_done", user_id, False)]


def test_stale_run_cannot_touch_a_newer_attempt(store: JobStore, user_id: uuid.UUID) -> None:
    job_id = store.insert_job("roto", INPUT, user_id)
    (row,) = store.claim_dispatchable(10)
    store.start_run(job_id, sensor_run("old", row.attempt))
    assert store.finish_failed(job_id, "old", "boom")
    with store.engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(status="pending"))
    (row2,) = store.claim_dispatchable(10)
    store.start_run(job_id, sensor_run("new", row2.attempt))
    # The zombie of attempt 1 wakes up: it can neither take the row nor write to it.
    with pytest.raises(StaleRunError):
        store.start_run(job_id, sensor_run("old", 1))
    assert not store.finish_done(job_id, "old", {"output_url": "stale"})
    with pytest.raises(StaleRunError):
        store.heartbeat(job_id, "old")
    store.heartbeat(job_id, "new", progress=0.5)
    assert store.get(job_id).progress == 0.5  # type: ignore[union-attr]
    assert store.get(job_id).status == "running"  # type: ignore[union-attr]
    assert len(store.notifications_for(job_id)) == 1


def test_second_sensor_run_for_same_attempt_is_refused(store: JobStore, user_id: uuid.UUID) -> None:
    job_id = store.insert_job("roto", INPUT, user_id)
    (row,) = store.claim_dispatchable(10)
    store.start_run(job_id, sensor_run("a", row.attempt))
    store.start_run(job_id, sensor_run("a", row.attempt))  # same run: idempotent
    with pytest.raises(StaleRunError):
        store.start_run(job_id, sensor_run("b", row.attempt))
    store.finish_done(job_id, "a", {"output_url": "x"})
    with pytest.raises(StaleRunError):
        store.start_run(job_id, sensor_run("b", row.attempt))


def test_reexecution_resumes_a_failed_attempt_and_backfill_starts_a_new_one(
    store: JobStore, user_id: uuid.UUID
) -> None:
    job_id = store.insert_job("roto", INPUT, user_id)
    (row,) = store.claim_dispatchable(10)
    store.start_run(job_id, sensor_run("r1", row.attempt))
    store.finish_failed(job_id, "r1", "transient trouble")
    resumed = store.start_run(job_id, RunIdentity("r1-reexec", row.attempt, resumes=("r1",)))
    assert resumed.status == "running" and resumed.attempt == 1 and resumed.error_message is None
    store.finish_done(job_id, "r1-reexec", {"output_url": "x"})
    backfill = store.start_run(job_id, RunIdentity("bf", None))
    assert backfill.attempt == 2 and backfill.dagster_run_id == "bf"
    with pytest.raises(StaleRunError):  # a second manual launch while this one runs
        store.start_run(job_id, RunIdentity("bf2", None))
    assert [n["kind"] for n in store.notifications_for(job_id)] == ["job_failed", "job_done"]


def test_reject_dispatch_fails_row_with_message(store: JobStore, user_id: uuid.UUID) -> None:
    job_id = store.insert_job("nope", INPUT, user_id)
    (row,) = store.claim_dispatchable(10)
    assert store.reject_dispatch(row, "unknown job type 'nope'")
    assert not store.reject_dispatch(row, "again")
    final = store.get(job_id)
    assert final.status == "failed" and final.error_message == "unknown job type 'nope'"  # type: ignore[union-attr]
    assert len(store.notifications_for(job_id)) == 1


def test_release_dispatch_makes_row_claimable_again(store: JobStore, user_id: uuid.UUID) -> None:
    store.insert_job("roto", INPUT, user_id)
    (row,) = store.claim_dispatchable(10)
    assert store.release_dispatch(row)
    (again,) = store.claim_dispatchable(10)
    assert again.attempt == 2


def test_concurrent_claimers_never_share_a_row(pg_store: JobStore, user_id: uuid.UUID) -> None:
    """Two daemons by mistake: SKIP LOCKED claims give each row to exactly one of them."""
    for _ in range(200):
        pg_store.insert_job("roto", INPUT, user_id)
    results: list[list[uuid.UUID]] = [[], [], [], []]

    def claim(slot: int) -> None:
        while batch := pg_store.claim_dispatchable(7):
            results[slot].extend(r.id for r in batch)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [i for r in results for i in r]
    assert len(claimed) == 200 and len(set(claimed)) == 200


def test_notification_unique_per_job_event(store: JobStore, user_id: uuid.UUID) -> None:
    import sqlalchemy as sa

    job_id = store.insert_job("roto", INPUT, user_id)
    row = dict(user_id=user_id, job_id=job_id, kind="job_done", title="t", message="m", event_key="run-1")
    with store.engine.begin() as conn:
        conn.execute(notifications.insert().values(id=uuid.uuid4(), **row))
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(notifications.insert().values(id=uuid.uuid4(), **row))


def test_cancel_of_a_running_row_stops_heartbeat_and_done(store: JobStore, user_id: uuid.UUID) -> None:
    from nolly_pipeline.errors import CanceledError

    job_id = store.insert_job("roto", INPUT, user_id)
    (row,) = store.claim_dispatchable(10)
    store.start_run(job_id, sensor_run("r1", row.attempt))
    request_cancel(store.engine, job_id)
    with pytest.raises(CanceledError):
        store.heartbeat(job_id, "r1")
    assert not store.finish_done(job_id, "r1", {"output_url": "late"})
    assert store.finish_failed(job_id, "r1", "canceled by user")
    final = store.get(job_id)
    assert final.status == "failed" and final.cancel_requested_at is None  # type: ignore[union-attr]


def test_cancel_of_a_queued_row_refuses_its_run(store: JobStore, user_id: uuid.UUID) -> None:
    from nolly_pipeline.errors import CanceledError

    job_id = store.insert_job("roto", INPUT, user_id)
    (row,) = store.claim_dispatchable(10)
    request_cancel(store.engine, job_id)
    with pytest.raises(CanceledError):
        store.start_run(job_id, sensor_run("r1", row.attempt))
    (pending,) = store.cancel_requests()
    assert store.cancel_unstarted(pending) and not store.cancel_unstarted(pending)
    assert store.get(job_id).error_message == "canceled by user"  # type: ignore[union-attr]
    assert [n["kind"] for n in store.notifications_for(job_id)] == ["job_failed"]
    assert store.cancel_requests() == []


def test_requeue_hands_the_row_back_for_a_new_attempt(store: JobStore, user_id: uuid.UUID) -> None:
    job_id = store.insert_job("roto", INPUT, user_id)
    (row,) = store.claim_dispatchable(10)
    running = store.start_run(job_id, sensor_run("r1", row.attempt))
    assert store.requeue(running, "worker died; retrying")
    assert not store.requeue(running, "again")  # fenced on the owning run
    (again,) = store.claim_dispatchable(10)
    assert again.attempt == 2 and again.error_message is None


def test_a_duplicate_worker_of_the_same_run_is_fenced_out(store: JobStore, user_id: uuid.UUID) -> None:
    """Two daemons by mistake can start two workers for one run: only the first may work."""
    job_id = store.insert_job("roto", INPUT, user_id)
    (row,) = store.claim_dispatchable(10)
    first = RunIdentity("run-1", row.attempt, worker="host:100")
    second = RunIdentity("run-1", row.attempt, worker="host:200")
    store.start_run(job_id, first)
    store.start_run(job_id, first)  # the same worker's next op
    with pytest.raises(StaleRunError):
        store.start_run(job_id, second)
    with pytest.raises(StaleRunError):
        store.heartbeat(job_id, "run-1", worker="host:200")
    assert not store.finish_failed(job_id, "run-1", "duplicate worker gave up", worker="host:200")
    assert store.finish_done(job_id, "run-1", {"output_url": "x"}, worker="host:100")
    assert [n["kind"] for n in store.notifications_for(job_id)] == ["job_done"]


def test_a_ui_resume_continues_the_attempt_its_parent_run_took(store: JobStore, user_id: uuid.UUID) -> None:
    """Runs launched from the UI carry no attempt tag: a resume finds its attempt by run family."""
    job_id = store.insert_job("roto", INPUT, user_id)
    (row,) = store.claim_dispatchable(10)
    store.start_run(job_id, sensor_run("r1", row.attempt))
    store.finish_done(job_id, "r1", {"output_url": "x"})
    materialize = store.start_run(job_id, RunIdentity("m1", None))
    assert materialize.attempt == 2
    store.finish_failed(job_id, "m1", "transient trouble")
    with pytest.raises(StaleRunError):  # a resume of some other run's attempt
        store.start_run(job_id, RunIdentity("x-resume", None, resumes=("x", "r1")))
    resumed = store.start_run(job_id, RunIdentity("m1-resume", None, resumes=("m1",)))
    assert resumed.attempt == 2 and resumed.dagster_run_id == "m1-resume"
    with pytest.raises(StaleRunError, match="already being processed .* left that attempt untouched"):
        store.start_run(job_id, RunIdentity("m2", None))
    assert store.get(job_id).dagster_run_id == "m1-resume"  # type: ignore[union-attr]


def test_phase_is_queued_on_claim_set_by_the_owning_run_and_cleared_when_final(
    store: JobStore, user_id: uuid.UUID
) -> None:
    done_id, requeued_id, released_id = (store.insert_job("roto", INPUT, user_id) for _ in range(3))
    assert store.get(done_id).phase is None  # pending, not seen by the pipeline yet
    claimed = {r.id: r for r in store.claim_dispatchable(10)}
    assert {r.phase for r in claimed.values()} == {"queued"}

    run = sensor_run("r1", 1)
    store.start_run(done_id, run)
    assert store.set_phase(done_id, run, "processing", reuse_key="k" * 64)
    assert not store.set_phase(done_id, sensor_run("stale", 1), "uploading")  # fenced on the owner
    row = store.get(done_id)
    assert (row.phase, row.reuse_key) == ("processing", "k" * 64)
    assert store.finish_done(done_id, "r1", {"output_url": "u"})
    assert (store.get(done_id).phase, store.get(done_id).reuse_key) == (None, "k" * 64)
    with store.engine.begin() as conn:  # the frontend's retry: a new attempt computes its own key
        conn.execute(jobs.update().where(jobs.c.id == done_id).values(status="pending"))
    (again,) = store.claim_dispatchable(10)
    assert (again.id, again.attempt, again.reuse_key, again.phase) == (done_id, 2, None, "queued")

    store.start_run(requeued_id, sensor_run("r2", 1))
    assert store.requeue(store.get(requeued_id), "worker died")
    assert store.get(requeued_id).phase is None
    assert store.release_dispatch(claimed[released_id])
    assert store.get(released_id).phase is None


def test_operator_listing_and_stats_on_both_databases(store: JobStore, user_id: uuid.UUID) -> None:
    import datetime as dt

    from nolly_pipeline.db.job_rows import utcnow

    processed, reused, waiting = (store.insert_job(t, INPUT, user_id) for t in ("roto", "roto", "audio-clean"))
    store.claim_dispatchable(10)
    for job_id, extra in ((processed, {}), (reused, {"reused_from": str(processed)})):
        store.start_run(job_id, sensor_run(f"r-{job_id}", 1))
        assert store.finish_done(job_id, f"r-{job_id}", {"output_url": "u", **extra})
    assert [r.id for r in store.list_jobs(status="done")] == [reused, processed]
    assert [r.id for r in store.list_jobs(job_type="audio-clean", user_id=user_id)] == [waiting]
    assert store.list_jobs(since=utcnow() + dt.timedelta(minutes=1)) == []
    stats = {s.job_type: s for s in store.stats(utcnow() - dt.timedelta(hours=1))}
    assert (stats["roto"].by_status, stats["roto"].reused, len(stats["roto"].processed_seconds)) == ({"done": 2}, 1, 1)
    assert stats["audio-clean"].by_status == {"pending": 1} and stats["audio-clean"].total == 1
