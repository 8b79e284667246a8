"""Cancellation, an attempt budget and progress on ``jobs``.

``cancel_requested_at`` is the frontend's way to cancel (it sets it to now()); ``max_attempts``
bounds retries, automatic or by the user; ``progress`` (0..1) can drive a progress bar.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_cancel_attempts_progress"
down_revision = "0002_pipeline_columns"

CANCELLABLE = "cancel_requested_at IS NOT NULL AND status IN ('pending', 'running')"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("cancel_requested_at", sa.DateTime()))
    op.add_column("jobs", sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="3"))
    op.add_column("jobs", sa.Column("progress", sa.Float()))
    op.create_index(
        "ix_jobs_cancel_requested",
        "jobs",
        ["cancel_requested_at"],
        postgresql_where=sa.text(CANCELLABLE),
        sqlite_where=sa.text(CANCELLABLE),
    )
