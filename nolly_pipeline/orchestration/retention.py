"""Retention of per-job partitions: finished jobs leave Dagster's partition lists after N days.

Every dispatched job adds one key to its type's dynamic partitions definition
(``roto_jobs``, ``color_grade_jobs``, ...). Dagster's UI and partition queries slow down
beyond roughly 100,000 partitions per asset, and an active studio passes that within months,
so the key of a job whose row is terminal (``done``/``failed``) and older than
``NOLLY_PARTITION_RETENTION_DAYS`` is deleted. The ``jobs`` row stays the record (status,
output URL, error message); the runs and their event logs stay in Dagster's run history.
A frontend retry of a deleted job (status back to ``pending``) simply adds the key again.

This is a sensor rather than a schedule: a schedule must launch a run, while the deletion
is a bookkeeping write the daemon applies itself from the tick's
``DeleteDynamicPartitionsRequest``. The sensor reads the existing keys (bounded by this very
retention) and looks their rows up by primary key, so its cost never grows with the number of
jobs ever processed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from dagster import (
    DagsterInstance,
    DefaultSensorStatus,
    DynamicPartitionsDefinition,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from nolly_pipeline.db.job_rows import utcnow
from nolly_pipeline.db.tables import TERMINAL_STATUSES, jobs
from nolly_pipeline.orchestration.assets import PARTITIONS
from nolly_pipeline.orchestration.resources import JobStoreResource
from nolly_pipeline.orchestration.ticks import minimum_interval

RETENTION_SENSOR_NAME = "partition_retention"
# Daily: retention is measured in days, and one pass deletes everything that expired.
RETENTION_INTERVAL_SECONDS = 24 * 3600
# Keys looked up per query; keeps the IN list well inside every driver's parameter limit.
LOOKUP_CHUNK = 1000
# Keys deleted per type and tick, so a first run against a large backlog stays one bounded
# tick; the rest goes on the next tick.
MAX_DELETES_PER_TICK = 20_000


def _chunks(items: Sequence[uuid.UUID], size: int) -> Iterable[Sequence[uuid.UUID]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def expired_keys(engine: sa.Engine, keys: Iterable[str], cutoff: dt.datetime) -> list[str]:
    """The partition keys among ``keys`` whose job is finished and older than ``cutoff``.

    A key whose row no longer exists (deleted by the frontend) has nothing left to show and
    expires too. Keys that are not job ids (added by hand in the UI) are never touched.
    """
    ids: dict[uuid.UUID, str] = {}
    for key in keys:
        try:
            ids[uuid.UUID(key)] = key
        except ValueError:
            continue
    # A row finished before the pipeline recorded completed_at falls back to its last write.
    finished_at = sa.func.coalesce(jobs.c.completed_at, jobs.c.updated_at, jobs.c.created_at)
    live: set[uuid.UUID] = set()
    expired: list[str] = []
    with engine.connect() as conn:
        for chunk in _chunks(list(ids), LOOKUP_CHUNK):
            rows = conn.execute(
                sa.select(jobs.c.id, jobs.c.status, finished_at.label("finished_at")).where(jobs.c.id.in_(chunk))
            )
            for row in rows:
                live.add(row.id)
                if row.status in TERMINAL_STATUSES and row.finished_at is not None and row.finished_at < cutoff:
                    expired.append(ids[row.id])
    expired.extend(key for job_id, key in ids.items() if job_id not in live)
    return sorted(expired)


def find_expired(
    instance: DagsterInstance, engine: sa.Engine, days: int
) -> list[tuple[DynamicPartitionsDefinition, list[str]]]:
    """Each partitions definition with its keys to delete (at most ``MAX_DELETES_PER_TICK``)."""
    cutoff = utcnow() - dt.timedelta(days=days)
    result = []
    for partitions in PARTITIONS.values():
        keys = expired_keys(engine, instance.get_dynamic_partitions(partitions.name), cutoff)
        if keys:
            result.append((partitions, keys[:MAX_DELETES_PER_TICK]))
    return result


def build_retention_sensor(days: int) -> SensorDefinition:
    """The sensor deleting partitions of jobs finished more than ``days`` days ago."""

    @sensor(
        name=RETENTION_SENSOR_NAME,
        minimum_interval_seconds=minimum_interval(RETENTION_INTERVAL_SECONDS),
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            f"Deletes the Dagster partition of each job finished more than {days} days ago "
            "(NOLLY_PARTITION_RETENTION_DAYS); the `jobs` row stays the record."
        ),
    )
    def partition_retention(context: SensorEvaluationContext, job_store: JobStoreResource) -> SensorResult | SkipReason:
        expired = find_expired(context.instance, job_store.store().engine, days)
        if not expired:
            return SkipReason(f"no partitions of jobs finished more than {days} days ago")
        context.log.info(
            "deleting partitions: " + ", ".join(f"{p.name} {len(keys)}" for p, keys in sorted(expired, key=lambda e: e[0].name))
        )
        return SensorResult(
            dynamic_partitions_requests=[partitions.build_delete_request(keys) for partitions, keys in expired]
        )

    return partition_retention
