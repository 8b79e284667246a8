"""Two daemons started by mistake on the same instance and database: no job processed twice."""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from urllib.parse import urlsplit

import pytest

from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline_tests.faults._checks import assert_exactly_once
from nolly_pipeline_tests.faults.harness import wait_runs_finished, ROTO_VERSION, insert_rows, status_counts, upload_inputs, wait_until
from nolly_pipeline_tests.fakes.replicate_api import Behavior
from nolly_pipeline_tests.media import tiny_video

pytestmark = pytest.mark.slow

JOBS = int(os.environ.get("NOLLY_TWO_DAEMONS_JOBS", "60"))
USERS = JOBS // 2


def test_two_daemons_process_each_job_once(make_stack, pg_store: JobStore, postgres_url: str) -> None:
    # Reuse off: every job must reach the model. The inputs are the same bytes under 60 keys, and
    # a user's second job would otherwise take the first one's outputs once that has finished.
    stack = make_stack(pg_store, postgres_url, NOLLY_SENSOR_BATCH_SIZE="10", NOLLY_REUSE_SCOPE="off")
    stack.fake.set_behavior(ROTO_VERSION, Behavior(starting=0, processing=1))
    users = [uuid.uuid4() for _ in range(USERS)]
    keys = [f"{users[i % USERS]}/job{i}.mp4" for i in range(JOBS)]  # one input object per job
    upload_inputs(stack.s3, stack.tmp, tiny_video(), keys)
    engine = stack.store.engine
    job_ids = insert_rows(engine, [("roto", users[i % USERS], stack.input_url(k)) for i, k in enumerate(keys)])
    first, second = stack.daemon("daemon-a"), stack.daemon("daemon-b")
    started = time.monotonic()
    first.start()
    second.start()
    try:
        wait_until(lambda: sum(status_counts(engine).get(s, 0) for s in ("done", "failed")) >= JOBS, 900, interval=2,
                 what="all rows terminal", on_timeout=lambda: f"{status_counts(engine)}\n{first.log_tail()}")
        wait_runs_finished(stack.home)
    finally:
        first.stop()
        second.stop()
    elapsed = time.monotonic() - started
    table, census = assert_exactly_once(engine, stack.home, job_ids)
    # One remote prediction per job: nothing was processed twice (no two workers for one run).
    per_input = Counter(urlsplit(next(v for v in p.input.values() if isinstance(v, str) and v.startswith("http"))).path
                        for p in stack.fake.predictions.values())
    doubled = {k: n for k, n in per_input.items() if n != 1}
    assert doubled == {} and len(per_input) == JOBS, doubled
    assert all(r["attempt"] == 1 for r in table.values())
    ticks = {name: d.log_path.read_text(errors="replace").count("dispatching ") for name, d in
             (("a", first), ("b", second))}
    print(f"\n{JOBS} jobs with two daemons: all done once in {elapsed:.0f} s; "
          f"dispatching ticks per daemon {ticks}; runs {dict(census.by_status)}; predictions {len(stack.fake.predictions)}")
