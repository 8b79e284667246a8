"""The reconciler: compares ``jobs`` rows with Dagster's run records and repairs mismatches.

Hooks write status back in the normal case; this sensor covers what hooks cannot see:
a run canceled or killed, a hook that failed to reach the database, a worker that died, a
daemon that crashed between claiming rows and creating their runs. It reads only rows
that are ``running`` or claimed-but-unstarted, both bounded by the concurrency limits, so a
tick stays cheap however many jobs have ever existed.
"""


import datetime as dt
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from nolly_pipeline.db.jobs import JobRow, JobStore, utcnow
from nolly_pipeline.db.tables import RUNNING
from nolly_pipeline.job_types import JOB_TYPES
from nolly_pipeline.orchestration.resources import JobStoreResource
from nolly_pipeline.orchestration.tags import ATTEMPT_TAG, JOB_ID_TAG

FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


@dataclass(frozen=True)
class ReconcilerPolicy:
    # A claimed row whose run has not taken it after this long is checked against Dagster.
    dispatch_grace: dt.timedelta = dt.timedelta(minutes=2)


@dataclass
class Repairs:
    settled_done: int = 0
    settled_failed: int = 0
    released: int = 0

    @property
    def total(self) -> int:
        return self.settled_done + self.settled_failed + self.released


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


def _settle_running(instance: DagsterInstance, store: JobStore, row: JobRow, repairs: Repairs) -> None:
    run = instance.get_run_by_id(row.dagster_run_id) if row.dagster_run_id else None
    if run is not None and run.status not in FINISHED:
        return
    assert row.dagster_run_id is not None
    if run is not None and run.status == DagsterRunStatus.SUCCESS:
        output = _published_output(instance, row)
        if output is not None and store.finish_done(row.id, row.dagster_run_id, output):
            repairs.settled_done += 1
            return
    if run is None:
        message = "processing was interrupted (its run no longer exists)"
    elif run.status == DagsterRunStatus.CANCELED:
        message = "processing was canceled"
    else:
        message = "processing stopped unexpectedly; please retry"
    if store.finish_failed(row.id, row.dagster_run_id, message):
        repairs.settled_failed += 1


def _settle_dispatched(instance: DagsterInstance, store: JobStore, row: JobRow, repairs: Repairs) -> None:
    runs = instance.get_runs(
        filters=RunsFilter(tags={JOB_ID_TAG: str(row.id), ATTEMPT_TAG: str(row.attempt)}), limit=1
    )
    if not runs:
        # Claimed, but the daemon never created the run: make the row dispatchable again.
        if store.release_dispatch(row):
            repairs.released += 1
        return
    if runs[0].status in FINISHED:
        # The run ended before its first op took the row (canceled while queued, failed to start).
        message = (
            "processing was canceled before it started"
            if runs[0].status == DagsterRunStatus.CANCELED
            else "processing could not start; please retry"
        )
        if store.reject_dispatch(row, message):
            repairs.settled_failed += 1


def reconcile(
    instance: DagsterInstance, store: JobStore, policy: ReconcilerPolicy, now: dt.datetime | None = None
) -> Repairs:
    """One pass over rows that may disagree with Dagster; idempotent."""
    now = now or utcnow()
    repairs = Repairs()
    for row in store.rows_with_status(RUNNING):
        _settle_running(instance, store, row, repairs)
    for row in store.dispatched_before(now - policy.dispatch_grace):
        _settle_dispatched(instance, store, row, repairs)
    return repairs


def build_reconciler_sensor(interval_seconds: int, policy: ReconcilerPolicy) -> SensorDefinition:
    @sensor(
        name="job_reconciler",
        minimum_interval_seconds=interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Settles `jobs` rows whose runs ended without writing back (killed, canceled, lost).",
    )
    def job_reconciler(context: SensorEvaluationContext, job_store: JobStoreResource) -> SkipReason:
        repairs = reconcile(context.instance, job_store.store(), policy)
        return SkipReason(
            f"settled {repairs.settled_done} done, {repairs.settled_failed} failed, "
            f"released {repairs.released} claims"
        )

    return job_reconciler
