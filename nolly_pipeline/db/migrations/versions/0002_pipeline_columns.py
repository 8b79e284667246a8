"""Pipeline bookkeeping on ``jobs`` and the new ``notifications`` table.

Additive only: new columns are nullable or defaulted, so the seed's frontend and any
rows already in the table keep working.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_pipeline_columns"
down_revision = "0001_seed_jobs"

DISPATCHABLE = "status = 'pending' AND dispatched_at IS NULL"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("dispatched_at", sa.DateTime()))
    op.add_column("jobs", sa.Column("started_at", sa.DateTime()))
    op.add_column("jobs", sa.Column("updated_at", sa.DateTime()))
    op.add_column("jobs", sa.Column("dagster_run_id", sa.Text()))
    op.create_index(
        "ix_jobs_dispatchable",
        "jobs",
        ["created_at"],
        postgresql_where=sa.text(DISPATCHABLE),
        sqlite_where=sa.text(DISPATCHABLE),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_table(
        "notifications",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), sa.ForeignKey("jobs.id", ondelete="CASCADE")),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("read", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now()),
        sa.Column("event_key", sa.Text(), nullable=False),
        sa.UniqueConstraint("job_id", "event_key", name="uq_notifications_job_event"),
    )
    op.create_index(
        "ix_notifications_user_created", "notifications", ["user_id", "created_at"]
    )
