"""The daemon is SIGKILLed (its whole process group: sensors, code server, run workers) at
random moments while a backlog is dispatched and processed, and restarted, repeatedly."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter

import pytest

from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline_tests.faults._checks import assert_exactly_once
from nolly_pipeline_tests.faults.harness import (
    wait_runs_finished,
    ROTO_VERSION, insert_rows, status_counts, upload_inputs, wait_until,
)
from nolly_pipeline_tests.fakes.replicate_api import Behavior
from nolly_pipeline_tests.media import tiny_video

pytestmark = pytest.mark.slow

JOBS, USERS, KILLS = 120, 60, 5


def test_repeated_daemon_kills_lose_and_double_nothing(make_stack, pg_store: JobStore, postgres_url: str) -> None:
    stack = make_stack(
        pg_store, postgres_url,
        NOLLY_HEARTBEAT_SECONDS="1", NOLLY_HEARTBEAT_TIMEOUT_SECONDS="10", NOLLY_RECONCILER_INTERVAL_SECONDS="2",
        NOLLY_DISPATCH_GRACE_SECONDS="5",
        # Small claims, so many ticks run while the backlog drains and a kill lands inside one.
        NOLLY_SENSOR_BATCH_SIZE="15",
    )
    stack.fake.set_behavior(ROTO_VERSION, Behavior(starting=0, processing=1))
    users = [uuid.uuid4() for _ in range(USERS)]
    upload_inputs(stack.s3, stack.tmp, tiny_video(), [f"{u}/clip.mp4" for u in users])
    engine = stack.store.engine
    # Each kill can also take a run worker: the attempt budget must outlast the kills.
    job_ids = insert_rows(engine, [("roto", users[i % USERS], stack.input_url(f"{users[i % USERS]}/clip.mp4"))
                                   for i in range(JOBS)], max_attempts=KILLS + 3)
    daemon = stack.daemon()
    rng = random.Random(1234)
    started = time.monotonic()
    kills = []
    for k in range(KILLS):
        daemon.start()
        # Sensor ticks start ~8 s after launch on this machine; kill between 6 and 25 s.
        time.sleep(rng.uniform(6, 25))
        before = status_counts(engine)
        daemon.kill()
        kills.append((round(time.monotonic() - started, 1), before))
    daemon.start()
    try:
        wait_until(lambda: status_counts(engine).get("done", 0) + status_counts(engine).get("failed", 0) >= JOBS,
                 900, interval=2, what="all rows terminal", on_timeout=lambda: f"{status_counts(engine)}\n{daemon.log_tail()}")
        wait_runs_finished(stack.home)
    finally:
        daemon.stop()
    elapsed = time.monotonic() - started
    log = daemon.log_path.read_text(errors="replace")
    table, census = assert_exactly_once(engine, stack.home, job_ids)
    attempts = Counter(r["attempt"] for r in table.values())
    print(f"\n{JOBS} jobs, {KILLS} daemon kills at (s, statuses before) {kills}")
    print(f"all done after {elapsed:.0f} s; attempts per job {dict(sorted(attempts.items()))}; "
          f"runs {census.total} by status {dict(census.by_status)}; "
          f"claims released by the reconciler: {log.count('released') and _released(log)}")


def _released(log: str) -> int:
    total = 0
    for line in log.splitlines():
        if "requeued" in line and "released" in line:
            try:
                total += int(line.split("released ")[1].split(" ")[0])
            except (IndexError, ValueError):
                pass
    return total
