"""A burst of 500 jobs from 250 users through a real daemon: throughput and exactly-once."""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter

import pytest

from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline_tests.faults._checks import assert_exactly_once
from nolly_pipeline_tests.faults.harness import (
    wait_runs_finished,
    ROTO_VERSION, insert_rows, instance_concurrency, status_counts, upload_inputs, wait_until,
)
from nolly_pipeline_tests.fakes.replicate_api import Behavior
from nolly_pipeline_tests.media import tiny_video

pytestmark = pytest.mark.slow

JOBS = int(os.environ.get("NOLLY_BURST_JOBS", "500"))
USERS = JOBS // 2
MAX_RUNS = int(os.environ.get("NOLLY_BURST_MAX_RUNS", "6"))


def test_burst_of_500_jobs(make_stack, pg_store: JobStore, postgres_url: str) -> None:
    stack = make_stack(pg_store, postgres_url, instance_extra=instance_concurrency(MAX_RUNS, per_user=2),
                       NOLLY_REPLICATE_POLL_SECONDS="0.1")
    stack.fake.set_behavior(ROTO_VERSION, Behavior(starting=0, processing=1))  # finishes on the first poll
    users = [uuid.uuid4() for _ in range(USERS)]
    upload_inputs(stack.s3, stack.tmp, tiny_video(), [f"{u}/clip.mp4" for u in users])
    engine = stack.store.engine
    daemon = stack.daemon().start()
    time.sleep(10)  # let the daemon load the code location before the clock starts
    job_ids = insert_rows(engine, [("roto", users[i % USERS], stack.input_url(f"{users[i % USERS]}/clip.mp4"))
                                   for i in range(JOBS)])
    started = time.monotonic()
    progress = []

    def all_terminal() -> bool:
        counts = status_counts(engine)
        n = counts.get("done", 0) + counts.get("failed", 0)
        progress.append((round(time.monotonic() - started), n))
        with open(stack.tmp / "burst_progress.txt", "a") as fh:  # readable while the test runs
            fh.write(f"{progress[-1][0]} s: {n} terminal {counts}\n")
        return n >= JOBS

    try:
        wait_until(all_terminal, 1800, interval=5, what="all rows terminal",
                 on_timeout=lambda: f"{status_counts(engine)} progress {progress[-10:]}\n{daemon.log_tail()}")
        wait_runs_finished(stack.home)
    finally:
        daemon.stop()
    elapsed = time.monotonic() - started
    table, census = assert_exactly_once(engine, stack.home, job_ids)
    print(f"\nburst: {JOBS} jobs, {USERS} users, max_concurrent_runs {MAX_RUNS}: all done in {elapsed:.0f} s = "
          f"{JOBS / elapsed * 60:.1f} jobs/min; runs {dict(census.by_status)}; "
          f"attempts {dict(Counter(r['attempt'] for r in table.values()))}; progress {progress[::12]}")
