"""SQLAlchemy Core definitions of ``jobs`` and ``notifications``.

``jobs`` keeps the seed's columns, names and statuses so the existing frontend keeps
working; the pipeline's own bookkeeping lives in added, nullable or defaulted columns.
Types are portable: JSONB and UUID on PostgreSQL, JSON text and CHAR(32) on SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
TERMINAL_STATUSES = (DONE, FAILED)
# What a live job is doing (``jobs.phase``); NULL before dispatch and once the job is final.
QUEUED, DOWNLOADING, PROCESSING, UPLOADING = "queued", "downloading", "processing", "uploading"

jobs = sa.Table(
    "jobs",
    metadata,
    # --- the seed's columns, unchanged -------------------------------------------------
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("user_id", sa.Uuid(), nullable=False),
    sa.Column("project_id", sa.Uuid()),
    sa.Column("type", sa.Text(), nullable=False),
    sa.Column("status", sa.Text(), server_default=PENDING),
    sa.Column("input_data", JSONType, nullable=False),
    sa.Column("output_data", JSONType),
    sa.Column("error_message", sa.Text()),
    sa.Column("created_at", sa.DateTime(), server_default=sa.func.now()),
    sa.Column("completed_at", sa.DateTime()),
    # --- added by the pipeline ------------------------------------------------------------
    # Number of the current attempt; the sensor increments it when it dispatches the row.
    sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"),
    # Set when the sensor has requested a run for the current attempt; cleared on a terminal
    # write, so a frontend "retry" (status back to pending) makes the row dispatchable again.
    sa.Column("dispatched_at", sa.DateTime()),
    sa.Column("started_at", sa.DateTime()),
    # Touched on every write and as a heartbeat while a run works on the row.
    sa.Column("updated_at", sa.DateTime()),
    # The run that owns the row; terminal writes are fenced on it.
    sa.Column("dagster_run_id", sa.Text()),
    # "host:pid" of the worker process that took the row (fences duplicate workers of one run).
    sa.Column("worker_id", sa.Text()),
    # Set by the frontend to cancel; the pipeline ends the row as failed, "canceled by user".
    sa.Column("cancel_requested_at", sa.DateTime()),
    # Attempts allowed in all (automatic requeues after crashes and user retries alike).
    sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="3"),
    # Fraction done (0..1) of the current attempt, for a progress bar.
    sa.Column("progress", sa.Float()),
    # What the current attempt is doing: queued (run requested), downloading, processing,
    # uploading; NULL when no run is on the row (pending before dispatch, done, failed).
    sa.Column("phase", sa.Text()),
    # SHA-256 over input bytes, validated settings, type and backend version (see reuse.py),
    # recorded by the attempt's download and cleared when a new attempt starts; a done row
    # with the same key can hand its outputs to a new job.
    sa.Column("reuse_key", sa.Text()),
)

# The sensor's query: O(new rows), whatever the backlog of dispatched-but-unfinished rows.
sa.Index(
    "ix_jobs_dispatchable",
    jobs.c.created_at,
    postgresql_where=sa.text("status = 'pending' AND dispatched_at IS NULL"),
    sqlite_where=sa.text("status = 'pending' AND dispatched_at IS NULL"),
)
sa.Index("ix_jobs_status", jobs.c.status)
sa.Index("ix_jobs_created_at", jobs.c.created_at)
sa.Index(
    "ix_jobs_reuse_key_done",
    jobs.c.reuse_key,
    jobs.c.completed_at,
    postgresql_where=sa.text("status = 'done' AND reuse_key IS NOT NULL"),
    sqlite_where=sa.text("status = 'done' AND reuse_key IS NOT NULL"),
)
sa.Index(
    "ix_jobs_cancel_requested",
    jobs.c.cancel_requested_at,
    postgresql_where=sa.text("cancel_requested_at IS NOT NULL AND status IN ('pending', 'running')"),
    sqlite_where=sa.text("cancel_requested_at IS NOT NULL AND status IN ('pending', 'running')"),
)

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("user_id", sa.Uuid(), nullable=False),
    sa.Column("job_id", sa.Uuid(), sa.ForeignKey("jobs.id", ondelete="CASCADE")),
    # 'job_done' or 'job_failed'
    sa.Column("kind", sa.Text(), nullable=False),
    sa.Column("title", sa.Text(), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("read", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.DateTime(), server_default=sa.func.now()),
    # What produced it: the Dagster run id of a terminal write, or "dispatch:<attempt>" when
    # the sensor rejected the row before any run. Unique per job: one notification per event.
    sa.Column("event_key", sa.Text(), nullable=False),
    sa.UniqueConstraint("job_id", "event_key", name="uq_notifications_job_event"),
)
sa.Index("ix_notifications_user_created", notifications.c.user_id, notifications.c.created_at)
