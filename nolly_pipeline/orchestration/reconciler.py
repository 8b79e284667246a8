"""The reconciler: compares ``jobs`` rows with Dagster's run records and repairs mismatches.

Hooks write status back in the normal case; these sensors cover what hooks cannot see:
a run canceled or killed, a hook that failed to reach the database, a worker that died
(``DefaultRunLauncher`` cannot tell, so rows carry a heartbeat), a daemon that crashed between
claiming rows and creating their runs, and cancellations requested by the frontend. They read
only rows that are ``running``, claimed-but-unstarted or marked for cancellation, all bounded
by the concurrency limits, so a tick stays cheap however many jobs have ever existed.
"""

import datetime as dt
import threading
from dataclasses import dataclass
from typing import Any, Callable

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from nolly_pipeline.config import DEFAULT_DISPATCH_GRACE_SECONDS, DEFAULT_HEARTBEAT_TIMEOUT_SECONDS
from nolly_pipeline.db.job_rows import JobRow, utcnow
from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline.db.tables import PENDING, RUNNING
from nolly_pipeline.errors import CanceledError
from nolly_pipeline.job_types import JOB_TYPES
from nolly_pipeline.orchestration.resources import JobStoreResource
from nolly_pipeline.orchestration.tags import ATTEMPT_TAG, JOB_ID_TAG
from nolly_pipeline.orchestration.ticks import minimum_interval

FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
TERMINATE_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class ReconcilerPolicy:
    # A claimed row whose run has not taken it after this long is checked against Dagster.
    dispatch_grace: dt.timedelta = dt.timedelta(seconds=DEFAULT_DISPATCH_GRACE_SECONDS)
    # A running row not touched for this long belongs to a dead worker.
    heartbeat_timeout: dt.timedelta = dt.timedelta(seconds=DEFAULT_HEARTBEAT_TIMEOUT_SECONDS)


@dataclass
class Repairs:
    settled_done: int = 0
    settled_failed: int = 0
    requeued: int = 0
    released: int = 0

    @property
    def total(self) -> int:
        return self.settled_done + self.settled_failed + self.requeued + self.released

    def __str__(self) -> str:
        return (
            f"settled {self.settled_done} done, {self.settled_failed} failed; "
            f"requeued {self.requeued}; released {self.released} claims"
        )


def _published_output(instance: DagsterInstance, row: JobRow) -> dict[str, Any] | None:
    """``output_data`` recorded by ``publish`` in this run's materialization, if any."""
    job_type = JOB_TYPES.get(row.type)
    if job_type is None:
        return None
    result = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(job_type.ident), asset_partitions=[str(row.id)]), limit=5
    )
    for record in result.records:
        if record.run_id != row.dagster_run_id:
            continue
        materialization = record.asset_materialization
        entry = materialization.metadata.get("output_data") if materialization else None
        if entry is not None:
            return entry.value  # type: ignore[return-value]
    return None


def stop_run(instance: DagsterInstance, run: DagsterRun, reason: str, *, terminate: bool) -> None:
    """Record in Dagster that a run is over, and (``terminate``) ask its worker to stop.

    Termination talks to the worker through the code server, and a frozen worker (SIGSTOP,
    a hung host) never answers; worse, the code server can then stall launching new runs.
    So a worker that stopped heartbeating is *not* terminated: its record is marked failed,
    and if it ever wakes up its own heartbeat finds the row gone and stops it. Termination
    (for cancellations, where the worker is alive) runs in a helper thread bounded by
    ``TERMINATE_WAIT_SECONDS``, so one bad worker cannot stall later ticks either way.
    """
    if terminate:

        def cancel() -> None:
            try:
                instance.run_coordinator.cancel_run(run.run_id)
            except Exception:  # noqa: BLE001 - the worker may be gone; the record is fixed below
                pass

        worker = threading.Thread(target=cancel, name=f"terminate-{run.run_id}", daemon=True)
        worker.start()
        worker.join(TERMINATE_WAIT_SECONDS)
    current = instance.get_run_by_id(run.run_id)
    if current is not None and current.status not in FINISHED:
        instance.report_run_failed(current, message=reason)


def _retry_or_fail(store: JobStore, row: JobRow, reason: str, repairs: Repairs) -> None:
    """An infrastructure failure: requeue within the attempt budget, else fail for good."""
    assert row.dagster_run_id is not None
    if row.attempts_left > 0:
        if store.requeue(row, f"{reason}; retrying"):
            repairs.requeued += 1
    elif store.finish_failed(row, row.dagster_run_id, _gave_up(row, reason)):
        repairs.settled_failed += 1


def _gave_up(row: JobRow, reason: str) -> str:
    return f"{reason} (gave up after {row.attempt} attempts)"


def _settle_running(
    instance: DagsterInstance, store: JobStore, row: JobRow, policy: ReconcilerPolicy, now: dt.datetime,
    repairs: Repairs,
) -> None:
    assert row.dagster_run_id is not None
    run = instance.get_run_by_id(row.dagster_run_id)
    if run is not None and run.status not in FINISHED:
        last_beat = row.updated_at or row.started_at
        if last_beat is not None and now - last_beat > policy.heartbeat_timeout:
            _retry_or_fail(store, row, "processing stopped responding", repairs)
            stop_run(instance, run, "no heartbeat from the run worker", terminate=False)
        return
    if run is not None and run.status == DagsterRunStatus.SUCCESS:
        output = _published_output(instance, row)
        if output is not None and store.finish_done(row, row.dagster_run_id, output):
            repairs.settled_done += 1
            return
    if run is not None and run.status == DagsterRunStatus.CANCELED:
        if store.finish_failed(row, row.dagster_run_id, "processing was canceled"):
            repairs.settled_failed += 1
        return
    reason = "processing was interrupted" if run is None else "processing stopped unexpectedly"
    _retry_or_fail(store, row, reason, repairs)


def _settle_dispatched(instance: DagsterInstance, store: JobStore, row: JobRow, repairs: Repairs) -> None:
    runs = instance.get_runs(
        filters=RunsFilter(tags={JOB_ID_TAG: str(row.id), ATTEMPT_TAG: str(row.attempt)}), limit=1
    )
    if not runs:
        # Claimed, but the daemon never created the run: make the row dispatchable again.
        if store.release_dispatch(row):
            repairs.released += 1
        return
    if runs[0].status == DagsterRunStatus.CANCELED:
        # Canceled in the queue (from the UI): the operator meant it.
        if store.reject_dispatch(row, "processing was canceled before it started"):
            repairs.settled_failed += 1
    elif runs[0].status in FINISHED:
        # The run died before its first op took the row (worker lost while starting, start
        # timeout): infrastructure, so a new attempt within the budget.
        if row.attempts_left > 0:
            if store.release_dispatch(row):
                repairs.released += 1
        elif store.reject_dispatch(row, _gave_up(row, "processing could not start")):
            repairs.settled_failed += 1


def reconcile(
    instance: DagsterInstance, store: JobStore, policy: ReconcilerPolicy, now: dt.datetime | None = None
) -> Repairs:
    """One pass over rows that may disagree with Dagster; idempotent."""
    now = now or utcnow()
    repairs = Repairs()
    for row in store.rows_with_status(RUNNING):
        _settle_running(instance, store, row, policy, now, repairs)
    for row in store.dispatched_before(now - policy.dispatch_grace):
        _settle_dispatched(instance, store, row, repairs)
    return repairs


def process_cancellations(instance: DagsterInstance, store: JobStore) -> int:
    """End every row the frontend asked to cancel; stop its run. Returns rows ended.

    The row is written first (fenced on its owner) so the message is always "canceled by
    user"; then the run is stopped. A Replicate prediction in flight is canceled remotely by
    the predictor when its heartbeat or the termination interrupts it.
    """
    ended = 0
    for row in store.cancel_requests():
        if row.status == PENDING:
            ended += store.cancel_unstarted(row)
            runs = instance.get_runs(
                filters=RunsFilter(tags={JOB_ID_TAG: str(row.id), ATTEMPT_TAG: str(row.attempt)}), limit=5
            )
        else:
            assert row.dagster_run_id is not None
            ended += store.finish_failed(row, row.dagster_run_id, CanceledError().message)
            run = instance.get_run_by_id(row.dagster_run_id)
            runs = [run] if run is not None else []
        for run in runs:
            if run.status not in FINISHED:
                stop_run(instance, run, CanceledError().message, terminate=True)
    return ended


def _store_sensor(
    name: str, interval_seconds: int, description: str, body: Callable[[DagsterInstance, JobStore], str]
) -> SensorDefinition:
    """A sensor that runs ``body`` over the jobs table each tick and reports what it did."""

    @sensor(
        name=name,
        minimum_interval_seconds=minimum_interval(interval_seconds),
        default_status=DefaultSensorStatus.RUNNING,
        description=description,
    )
    def store_sensor(context: SensorEvaluationContext, job_store: JobStoreResource) -> SkipReason:
        return SkipReason(body(context.instance, job_store.store()))

    return store_sensor


def build_reconciler_sensor(interval_seconds: int, policy: ReconcilerPolicy) -> SensorDefinition:
    return _store_sensor(
        "job_reconciler", interval_seconds,
        "Settles `jobs` rows whose runs died, were canceled or never started.",
        lambda instance, store: str(reconcile(instance, store, policy)),
    )


def build_cancellation_sensor(interval_seconds: int) -> SensorDefinition:
    return _store_sensor(
        "job_cancellations", interval_seconds,
        "Ends rows whose `cancel_requested_at` the frontend set, and stops their runs.",
        lambda instance, store: f"canceled {process_cancellations(instance, store)} job(s)",
    )
