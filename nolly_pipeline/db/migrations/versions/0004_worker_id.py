"""``worker_id``: which process works on the row, to fence duplicate workers of one run.

Two daemons by mistake can launch two workers for the same Dagster run; both carry the
same run id, so ownership is also fenced on the worker process that took the row.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_worker_id"
down_revision = "0003_cancel_attempts_progress"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("worker_id", sa.Text()))
