"""The bare Dagster baseline of ``benchmarks/dispatch.py``: what orchestration costs without us.

Three no-op ops ``download -> predict -> publish`` on the in-process executor, launched by a
sensor that claims rows of a table and requests one run per row, as the project's dispatch
sensor does. Runs carry the project's concurrency tags (``nolly/job_type``, one
``nolly/user_id`` per row) and ``predict`` sits in the ``replicate`` pool, so the repo's
``dagster.yaml`` limits both sides alike. Nothing of ``nolly_pipeline`` is imported: a run
worker of this location pays for Dagster alone.

Configured by the benchmark through ``BARE_DATABASE_URL`` (a libpq URL) and
``BARE_SENSOR_INTERVAL_SECONDS``.
"""

from __future__ import annotations

import os

from dagster import (
    DefaultSensorStatus,
    Definitions,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    in_process_executor,
    job,
    op,
    sensor,
)

ROW_TAG = "bench/row_id"
TABLE_DDL = (
    "CREATE TABLE IF NOT EXISTS bare_rows (id uuid PRIMARY KEY, user_id uuid NOT NULL,"
    " created_at timestamptz NOT NULL DEFAULT now(), dispatched_at timestamptz)"
)


@op
def download() -> str:
    return "source"


@op(pool="replicate")
def predict(source: str) -> str:
    return source


@op
def publish(result: str) -> str:
    return result


@job(executor_def=in_process_executor)
def bare_job() -> None:
    publish(predict(download()))


@sensor(
    job=bare_job,
    # One second of tolerance, as the project's sensor has (nolly_pipeline/orchestration/ticks.py):
    # without it the daemon ticks a 5 s sensor every 10 s, and both sides tick alike.
    minimum_interval_seconds=max(1, int(os.environ.get("BARE_SENSOR_INTERVAL_SECONDS", "5")) - 1),
    default_status=DefaultSensorStatus.RUNNING,
)
def bare_rows_sensor(context: SensorEvaluationContext):
    import psycopg2  # the sensor's own dependency; run workers never import it

    conn = psycopg2.connect(os.environ["BARE_DATABASE_URL"])
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE bare_rows SET dispatched_at = now() WHERE dispatched_at IS NULL RETURNING id, user_id"
            )
            rows = cur.fetchall()
    finally:
        conn.close()
    if not rows:
        return SkipReason("no new rows")
    return [
        RunRequest(
            run_key=str(row_id),
            tags={ROW_TAG: str(row_id), "nolly/job_type": "audio-clean", "nolly/user_id": str(user_id)},
        )
        for row_id, user_id in rows
    ]


defs = Definitions(jobs=[bare_job], sensors=[bare_rows_sensor])
