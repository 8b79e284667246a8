"""A tiny code location for the launcher tests: a job that reports where its modules were
imported, a job that waits until it is cancelled (another that waits holding a pool slot),
and one that pauses for 1 s (less than a
worker's idle limit on a held connection, :data:`.worker_connections.IDLE_SECONDS`)."""

import json
import os
import sys
import time

from dagster import Definitions, OpExecutionContext, in_process_executor, job, op

IMPORTED_IN_PID = os.getpid()  # the zygote's pid when preloaded, the worker's otherwise


@op
def report(context: OpExecutionContext) -> None:
    marker = sys.modules.get("nolly_pipeline_tests.orchestration.preload_marker")
    context.log.info(json.dumps({
        "worker": os.getpid(),
        "parent": os.getppid(),
        "location_imported_in": IMPORTED_IN_PID,
        "preload_imported_in": getattr(marker, "IMPORTED_IN_PID", None),
    }))


@op
def wait_forever() -> None:
    while True:
        time.sleep(0.1)


@op
def pause() -> None:
    time.sleep(1)


@op(pool="launcher_test_pool")
def wait_in_pool() -> None:
    while True:
        time.sleep(0.1)


@job
def pausing_job() -> None:
    pause()


@job
def report_job() -> None:
    report()


@job
def waiting_job() -> None:
    wait_forever()


@job
def pooled_waiting_job() -> None:
    wait_in_pool()


# In-process, as the project runs: the op runs in the run worker itself.
defs = Definitions(jobs=[report_job, waiting_job, pausing_job, pooled_waiting_job], executor=in_process_executor)
