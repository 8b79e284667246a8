"""The seed's ``jobs`` table, created only where it does not exist yet.

Studios migrating from the Supabase worker already have this table with rows in it; new
installs get it here so that every later revision can assume it.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001_seed_jobs"
down_revision = None


def upgrade() -> None:
    bind = op.get_bind()
    if sa.inspect(bind).has_table("jobs"):
        return
    postgres = bind.dialect.name == "postgresql"
    op.create_table(
        "jobs",
        sa.Column(
            "id",
            sa.Uuid(),
            primary_key=True,
            server_default=sa.text("gen_random_uuid()") if postgres else None,
        ),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("project_id", sa.Uuid()),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending"),
        sa.Column("input_data", postgresql.JSONB() if postgres else sa.JSON(), nullable=False),
        sa.Column("output_data", postgresql.JSONB() if postgres else sa.JSON()),
        sa.Column("error_message", sa.Text()),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now()),
        sa.Column("completed_at", sa.DateTime()),
    )
