"""A code location whose sensor (every 5 s) asks for one run of a no-op job, once (its run key
never changes), and then keeps ticking: for ``test_daemon_connections.py``."""

from dagster import DefaultSensorStatus, Definitions, RunRequest, in_process_executor, job, op, sensor

from nolly_pipeline.orchestration.ticks import minimum_interval


@op
def nothing() -> None:
    pass


@job(executor_def=in_process_executor)
def once_job() -> None:
    nothing()


@sensor(job=once_job, minimum_interval_seconds=minimum_interval(5), default_status=DefaultSensorStatus.RUNNING)
def once() -> RunRequest:
    return RunRequest(run_key="once")


defs = Definitions(jobs=[once_job], sensors=[once])
