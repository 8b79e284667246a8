"""``phase`` for the frontend's spinner and ``reuse_key`` for content-addressed result reuse.

``phase`` (``queued``, ``downloading``, ``processing``, ``uploading``; NULL when no run is
working on the row) says what the pipeline is doing next to ``progress``. ``reuse_key`` is
the SHA-256 of what decides a job's outputs (input bytes, settings, type, backend version);
a ``done`` row with the same key can hand its outputs to a new job. The partial index keeps
the lookup to ``done`` rows. ``ix_jobs_created_at`` serves the operator CLI's listings and
daily stats (newest first, or since a time). Both columns are nullable: existing rows and the seed's
frontend are unaffected.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_phase_reuse_key"
down_revision = "0004_worker_id"

DONE_WITH_KEY = "status = 'done' AND reuse_key IS NOT NULL"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("phase", sa.Text()))
    op.add_column("jobs", sa.Column("reuse_key", sa.Text()))
    op.create_index(
        "ix_jobs_reuse_key_done",
        "jobs",
        ["reuse_key", "completed_at"],
        postgresql_where=sa.text(DONE_WITH_KEY),
        sqlite_where=sa.text(DONE_WITH_KEY),
    )
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
