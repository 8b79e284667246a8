"""kill -9 of a run worker in the middle of a Replicate prediction (real daemon)."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline_tests.faults.harness import (
    ROTO_VERSION, cmdline, insert_rows, proc_stat, run_census, run_failure_messages, run_worker_pids,
    upload_inputs, wait_until,
)
from nolly_pipeline_tests.fakes.replicate_api import Behavior
from nolly_pipeline_tests.media import tiny_video

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("victims", ["worker", "hung_worker"])
def test_killed_worker_is_detected_requeued_and_succeeds_as_attempt_2(
    make_stack, pg_store: JobStore, postgres_url: str, victims: str
) -> None:
    """``worker``: kill -9; the zygote that forked the worker sees it die and the launcher
    marks the run failed at once. ``hung_worker``: SIGSTOP (a frozen process: nobody reports
    anything, the run stays STARTED), so only the row's heartbeat going stale tells the
    reconciler; the worker is resumed (SIGCONT) after the takeover and must change nothing."""
    stack = make_stack(
        pg_store, postgres_url,
        NOLLY_HEARTBEAT_SECONDS="1", NOLLY_HEARTBEAT_TIMEOUT_SECONDS="10", NOLLY_RECONCILER_INTERVAL_SECONDS="2",
    )
    fake, store = stack.fake, stack.store
    fake.set_behavior(ROTO_VERSION, Behavior(never_finishes=True))
    user = uuid.uuid4()
    upload_inputs(stack.s3, stack.tmp, tiny_video(), [f"{user}/clip.mp4"])
    (job_id,) = insert_rows(store.engine, [("roto", user, stack.input_url(f"{user}/clip.mp4"))])
    daemon = stack.daemon().start()

    def dump() -> str:
        return f"row={store.get(job_id)}\n{daemon.log_tail()}"

    wait_until(lambda: len(fake.predictions) == 1 and store.get(job_id).status == "running", 180,
             what="prediction in flight", on_timeout=dump)
    first = store.get(job_id)
    assert first.attempt == 1
    run_id = first.dagster_run_id
    pids = run_worker_pids(daemon.pgid, run_id)
    assert pids, f"no process found for run {run_id}"
    workers = [p for p in pids if "nolly_pipeline.orchestration.zygote" in cmdline(p)]  # forked workers
    assert len(workers) == 1, [cmdline(p) for p in pids]
    for pid in pids:
        print(f"\nkilling {pid}: {cmdline(pid)[:150]}")

    # From now on the model answers at once: the next attempt must succeed.
    fake.set_behavior(ROTO_VERSION, Behavior(starting=0, processing=1))
    killed_at = time.monotonic()
    if victims == "hung_worker":
        os.kill(workers[0], signal.SIGSTOP)
    else:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

    reasons: set[str | None] = set()  # what the row said while it waited for attempt 2

    def requeued_row() -> bool:
        row = store.get(job_id)
        if row.status == "pending" and row.attempt == 1:
            reasons.add(row.error_message)
        return row.attempt >= 2 or row.status == "pending"

    requeued = wait_until(requeued_row, 60, interval=0.1, what="row requeued", on_timeout=dump)
    print(f"requeue reasons seen: {reasons!r}")
    if victims == "hung_worker":
        # The dispatcher may claim the requeued row (clearing its message) in the same
        # daemon loop as the reconciler's tick, before any poll sees it: the reason is also
        # checked where it lasts, in the failure the reconciler recorded on attempt 1's run
        # from the same branch (the heartbeat went stale; nothing else ends a frozen run).
        wait_until(lambda: "no heartbeat from the run worker" in run_failure_messages(stack.home, run_id), 30,
                   what="attempt 1's run failed for its heartbeat", on_timeout=dump)
        assert reasons <= {"processing stopped responding; retrying"}, reasons
        assert requeued >= 8  # the heartbeat timeout (10 s) really was waited for
    done = wait_until(lambda: store.get(job_id).status in ("done", "failed"), 120, interval=0.2,
                    what="row terminal", on_timeout=dump) + requeued
    if victims == "hung_worker":
        os.kill(workers[0], signal.SIGCONT)  # the stale worker wakes up after the takeover
        wait_until(lambda: _gone(workers[0]), 60,
                 what="stale worker exited")
        time.sleep(2)
    row = store.get(job_id)
    print(f"\n[{victims}] kill -9 of {pids}: requeued after {requeued:.1f} s, done after {done:.1f} s "
          f"(heartbeat 1 s, timeout 10 s, reconciler every 2 s)")
    assert row.status == "done", row.error_message
    assert row.attempt == 2
    # 10 s heartbeat timeout + one 2 s reconciler interval + slack for a loaded 2-core machine.
    assert requeued < 30
    assert [n["kind"] for n in store.notifications_for(job_id)] == ["job_done"]

    # The row is written by the success hook, a moment before Dagster records RUN_SUCCESS.
    wait_until(lambda: run_census(stack.home, [job_id]).success_attempt == {str(job_id): "2"}, 30,
             what="attempt 2's run recorded as SUCCESS")
    census = run_census(stack.home, [job_id])
    assert set(census.runs_by_attempt) == {(str(job_id), "1"), (str(job_id), "2")}
    assert not census.duplicate_keys and not census.duplicate_attempts
    assert census.success_attempt == {str(job_id): "2"}
    assert len(census.success_by_job[str(job_id)]) == 1
    # The killed run is not left "started" forever in Dagster's records.
    assert census.by_status["SUCCESS"] == 1 and census.by_status["STARTED"] == 0, census.by_status
    assert row.output_data["storage_path"].startswith(f"{user}/{job_id}/a2/")
    orphan = [p for p in fake.predictions.values() if p.status == "processing"]
    print(f"remote predictions: {len(fake.predictions)}, still processing after the kill: {len(orphan)}, "
          f"canceled: {len(fake.canceled_ids)}")
    daemon.stop()
    assert time.monotonic() - killed_at < 150


def _gone(pid: int) -> bool:
    """Exited: no process, or a zombie waiting for its parent."""
    fields = proc_stat(pid)
    return fields is None or fields[0] == "Z"
