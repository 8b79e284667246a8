"""Partition retention: only finished, old jobs lose their partition; rows are never touched."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, Definitions, SensorResult, SkipReason, build_sensor_context

from nolly_pipeline.config import DEFAULT_PARTITION_RETENTION_DAYS, Settings
from nolly_pipeline.db.job_rows import utcnow
from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline.db.tables import jobs
from nolly_pipeline.definitions import build_resources
from nolly_pipeline.orchestration.resources import JobStoreResource
from nolly_pipeline.orchestration.retention import build_retention_sensor

DAYS = 30


def _job(store: JobStore, job_type: str, status: str, finished_days_ago: float | None) -> str:
    job_id = store.insert_job(job_type, {"file_url": "s3://vfx-assets/u/in.mp4"}, uuid.uuid4())
    completed = utcnow() - dt.timedelta(days=finished_days_ago) if finished_days_ago is not None else None
    with store.engine.begin() as conn:
        conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(status=status, completed_at=completed))
    return str(job_id)


def _tick(instance: DagsterInstance, store: JobStore) -> SensorResult | SkipReason:
    """One evaluation, with the deletions applied the way the sensor daemon applies them."""
    url = store.engine.url.render_as_string(hide_password=False)
    with build_sensor_context(instance=instance, resources={"job_store": JobStoreResource(database_url=url)}) as ctx:
        result = build_retention_sensor(DAYS)(ctx)
    if isinstance(result, SensorResult):
        for request in result.dynamic_partitions_requests or []:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
    return result


def test_deletes_only_partitions_of_jobs_finished_before_the_cutoff(store: JobStore) -> None:
    old_done = _job(store, "roto", "done", DAYS + 1)
    old_failed = _job(store, "roto", "failed", DAYS + 5)
    recent_done = _job(store, "roto", "done", DAYS - 1)
    # Running and pending rows keep their partition whatever their age (a retry, a long job).
    old_running = _job(store, "roto", "running", None)
    old_pending = _job(store, "roto", "pending", DAYS + 10)
    old_audio = _job(store, "audio-clean", "done", DAYS + 2)
    orphan = str(uuid.uuid4())  # its row was deleted by the frontend
    with store.engine.begin() as conn:
        conn.execute(sa.update(jobs).where(jobs.c.id == uuid.UUID(old_running)).values(
            created_at=utcnow() - dt.timedelta(days=DAYS * 3)))
    with DagsterInstance.ephemeral() as instance:
        roto_keys = [old_done, old_failed, recent_done, old_running, old_pending, orphan, "manual-key"]
        instance.add_dynamic_partitions("roto_jobs", roto_keys)
        instance.add_dynamic_partitions("audio_clean_jobs", [old_audio])

        result = _tick(instance, store)

        assert isinstance(result, SensorResult)
        assert sorted(instance.get_dynamic_partitions("roto_jobs")) == sorted(
            [recent_done, old_running, old_pending, "manual-key"]
        )
        assert instance.get_dynamic_partitions("audio_clean_jobs") == []
        # The rows are the record and stay as they were.
        assert store.get(old_done).status == "done" and store.get(old_failed).status == "failed"  # type: ignore[union-attr]
        # Nothing left to delete: the next tick skips.
        assert isinstance(_tick(instance, store), SkipReason)


def test_sensor_loads_with_the_code_locations_resources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What definitions.py wires: the sensor next to the real resources, days from Settings."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("NOLLY_PARTITION_RETENTION_DAYS", "14")
    settings = Settings.from_env()
    defs = Definitions(
        sensors=[build_retention_sensor(settings.partition_retention_days)], resources=build_resources(settings)
    )
    sensor = defs.get_repository_def().get_sensor_def("partition_retention")
    # Ticks once a day: the daemon's wake-up jitter is absorbed by 1 s (see test_ticks.py).
    assert sensor.minimum_interval_seconds == 24 * 3600 - 1 and "14 days" in (sensor.description or "")


def test_retention_days_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOLLY_PARTITION_RETENTION_DAYS", raising=False)
    assert Settings.from_env().partition_retention_days == DEFAULT_PARTITION_RETENTION_DAYS
    monkeypatch.setenv("NOLLY_PARTITION_RETENTION_DAYS", "7")
    assert Settings.from_env().partition_retention_days == 7
    monkeypatch.setenv("NOLLY_PARTITION_RETENTION_DAYS", "0")
    with pytest.raises(ValueError, match="NOLLY_PARTITION_RETENTION_DAYS"):
        Settings.from_env()
