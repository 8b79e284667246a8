"""The seed's ``jobs`` DDL, verbatim, for migration and drop-in tests, and its way of
submitting a job (plain SQL, as the frontend's edge function does)."""

from __future__ import annotations

import json
import uuid

import sqlalchemy as sa

from nolly_pipeline.db.tables import jobs

SEED_JOBS_DDL = """
CREATE TABLE jobs (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id UUID NOT NULL,
  project_id UUID,
  type TEXT NOT NULL,           -- 'roto', 'color-grade', 'audio-clean'
  status TEXT DEFAULT 'pending', -- 'pending', 'running', 'done', 'failed'
  input_data JSONB NOT NULL,     -- { file_url, settings }
  output_data JSONB,             -- { output_url, storage_path }
  error_message TEXT,
  created_at TIMESTAMP DEFAULT now(),
  completed_at TIMESTAMP
);
"""

# SQLite cannot call gen_random_uuid()/now() in a DEFAULT; otherwise the same table.
SEED_JOBS_DDL_SQLITE = (
    SEED_JOBS_DDL.replace(" DEFAULT gen_random_uuid()", "").replace("DEFAULT now()", "DEFAULT CURRENT_TIMESTAMP")
)


def insert_job(
    conn: sa.Connection, job_type: str, input_data: object, user: uuid.UUID, max_attempts: int | None = None
) -> uuid.UUID:
    """Insert a row as the frontend does: the seed's columns only (plus ``max_attempts``)."""
    columns = "user_id, type, input_data" + (", max_attempts" if max_attempts else "")
    values = ":u, :t, CAST(:d AS JSONB)" + (", :m" if max_attempts else "")
    return conn.execute(
        sa.text(f"INSERT INTO jobs ({columns}) VALUES ({values}) RETURNING id"),
        {"u": str(user), "t": job_type, "d": json.dumps(input_data), "m": max_attempts},
    ).scalar_one()


def request_cancel(engine: sa.Engine, job_id: uuid.UUID) -> None:
    """Ask to cancel a job as the frontend does (README: ``SET cancel_requested_at = now()``)."""
    with engine.begin() as conn:  # Core rather than text: now() is spelt differently on SQLite
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(cancel_requested_at=sa.func.now()))
