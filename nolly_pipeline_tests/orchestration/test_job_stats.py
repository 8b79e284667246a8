"""The daily ``job_stats`` report on PostgreSQL: figures, failure messages, chart, and its schedule."""

from __future__ import annotations

import base64
import datetime as dt
import uuid

import cv2
import numpy as np
import sqlalchemy as sa
from dagster import DefaultScheduleStatus, DagsterInstance, build_schedule_context, materialize

from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline.db.stats import percentile
from nolly_pipeline.db.tables import jobs
from nolly_pipeline.orchestration.job_stats import job_stats, job_stats_schedule
from nolly_pipeline.orchestration.resources import JobStoreResource
from nolly_pipeline_tests.seed import insert_job

DAY = dt.datetime(2026, 3, 14)


def add(store: JobStore, job_type: str, status: str, created: dt.datetime, wait: float | None = None,
        took: float | None = None, error: str | None = None) -> None:
    """A row inserted with the frontend's SQL, then aged as the pipeline would have left it."""
    with store.engine.begin() as conn:
        job_id = insert_job(conn, job_type, {"file_url": "s3://vfx-assets/u/x.mp4"}, uuid.uuid4())
        started = created + dt.timedelta(seconds=wait) if wait is not None else None
        completed = started + dt.timedelta(seconds=took) if started and took is not None else None
        conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(
            status=status, created_at=created, started_at=started, completed_at=completed, error_message=error))


def test_a_day_of_jobs_is_summarised_per_type_with_a_chart(pg_store: JobStore, postgres_url: str) -> None:
    for i in range(10):  # colour grade: 10 done, waits 1..10 s, processing 10..100 s
        add(pg_store, "color-grade", "done", DAY + dt.timedelta(hours=i), wait=i + 1, took=10 * (i + 1))
    for _ in range(3):
        add(pg_store, "roto", "failed", DAY + dt.timedelta(hours=1), wait=2, took=5, error="could not decode x.mp4: EOF")
    add(pg_store, "roto", "failed", DAY + dt.timedelta(hours=2), wait=2, took=5, error="canceled by user")
    add(pg_store, "roto", "pending", DAY + dt.timedelta(hours=23, minutes=59))
    add(pg_store, "audio-clean", "done", DAY - dt.timedelta(seconds=1), wait=1, took=1)  # the day before
    add(pg_store, "audio-clean", "done", DAY + dt.timedelta(days=1), wait=1, took=1)  # the day after

    with DagsterInstance.ephemeral() as instance:
        result = materialize([job_stats], partition_key="2026-03-14", instance=instance,
                             resources={"job_store": JobStoreResource(database_url=postgres_url)})
    assert result.success
    (event,) = result.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert meta["jobs"].value == 15 and meta["done"].value == 10 and meta["failed"].value == 4
    assert "| color-grade | 0 | 0 | 10 | 0 |" in meta["by_type"].md_str
    assert "| roto | 1 | 0 | 0 | 4 |" in meta["by_type"].md_str
    assert "| audio-clean | 0 | 0 | 0 | 0 |" in meta["by_type"].md_str
    assert meta["color_grade_processing_p95_seconds"].value == percentile([10.0 * i for i in range(1, 11)], 95)
    assert meta["color_grade_processing_p95_seconds"].value == 95.5
    assert meta["color_grade_queue_wait_p95_seconds"].value == 9.55
    failures = meta["top_failures"].md_str.splitlines()
    assert failures[0] == "- **roto** (3×): could not decode x.mp4: EOF" and "canceled by user" in failures[1]
    png = base64.b64decode(meta["chart"].md_str.split("base64,", 1)[1].rstrip(")"))
    chart = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert chart is not None and chart.shape[1] >= 400 and len(png) < 150_000
    value = result.output_for_node("job_stats")
    assert value["color-grade"]["processing_p50"] == 55.0 and value["roto"]["top_failures"][0]["count"] == 3


def test_the_schedule_fills_yesterday_and_runs_by_default() -> None:
    assert job_stats_schedule.default_status == DefaultScheduleStatus.RUNNING
    when = dt.datetime(2026, 3, 15, 0, 30, tzinfo=dt.timezone.utc)
    with DagsterInstance.ephemeral() as instance:
        context = build_schedule_context(instance=instance, scheduled_execution_time=when)
        (request,) = list(job_stats_schedule.evaluate_tick(context).run_requests or [])
    assert request.partition_key == "2026-03-14"

