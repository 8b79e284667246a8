"""The pipeline's and the operators' reads of ``jobs`` and ``notifications`` (no writes).

:class:`~nolly_pipeline.db.jobs.JobStore` adds the writes and the rules that keep a job from
being lost or doubled; the CLI's listings and stats read through the same class.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa

from nolly_pipeline.db.job_rows import JobRow, TypeStats, as_uuid
from nolly_pipeline.db.tables import DONE, PENDING, RUNNING, jobs, notifications


class JobReads:
    """Read queries over one SQLAlchemy engine."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # --- reads -------------------------------------------------------------------------
    def get(self, job_id: uuid.UUID | str) -> JobRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(jobs).where(jobs.c.id == as_uuid(job_id))
            ).mappings().first()
        return JobRow.from_mapping(row) if row else None

    def notifications_for(self, job_id: uuid.UUID | str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(notifications)
                .where(notifications.c.job_id == as_uuid(job_id))
                .order_by(notifications.c.created_at)
            ).mappings()
            return [dict(r) for r in rows]

    def rows_with_status(self, status: str, limit: int = 1000) -> list[JobRow]:
        return self._rows(sa.select(jobs).where(jobs.c.status == status).limit(limit))

    def cancel_requests(self, limit: int = 500) -> list[JobRow]:
        """Rows the user asked to cancel that are not final yet (partial index)."""
        return self._rows(
            sa.select(jobs)
            .where(jobs.c.cancel_requested_at.is_not(None), jobs.c.status.in_([PENDING, RUNNING]))
            .limit(limit)
        )

    def _rows(self, query: sa.Select) -> list[JobRow]:
        with self.engine.connect() as conn:
            return [JobRow.from_mapping(r) for r in conn.execute(query).mappings()]

    def dispatched_before(self, cutoff: dt.datetime, limit: int = 1000) -> list[JobRow]:
        """Pending rows claimed by the sensor before ``cutoff`` whose run never took them."""
        return self._rows(
            sa.select(jobs)
            .where(jobs.c.status == PENDING, jobs.c.dispatched_at.is_not(None), jobs.c.dispatched_at < cutoff)
            .limit(limit)
        )

    def done_with_reuse_key(
        self,
        reuse_key: str,
        *,
        user_id: uuid.UUID | None = None,
        exclude: uuid.UUID | None = None,
        limit: int = 5,
    ) -> list[JobRow]:
        """Done rows with this result-reuse key, newest first (partial index
        ``ix_jobs_reuse_key_done``); only ``user_id``'s when given."""
        query = (
            sa.select(jobs)
            .where(jobs.c.reuse_key == reuse_key, jobs.c.status == DONE)
            .order_by(jobs.c.completed_at.desc())
            .limit(limit)
        )
        if user_id is not None:
            query = query.where(jobs.c.user_id == user_id)
        if exclude is not None:
            query = query.where(jobs.c.id != exclude)
        return self._rows(query)

    # --- operators (the CLI) --------------------------------------------------------------
    def list_jobs(
        self,
        *,
        status: str | None = None,
        job_type: str | None = None,
        user_id: uuid.UUID | str | None = None,
        since: dt.datetime | None = None,
        limit: int = 50,
    ) -> list[JobRow]:
        """Newest first, filtered on what was given (``ix_jobs_created_at``)."""
        query = sa.select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit)
        if status is not None:
            query = query.where(jobs.c.status == status)
        if job_type is not None:
            query = query.where(jobs.c.type == job_type)
        if user_id is not None:
            query = query.where(jobs.c.user_id == as_uuid(user_id))
        if since is not None:
            query = query.where(jobs.c.created_at >= since)
        return self._rows(query)

    def stats(self, since: dt.datetime) -> list[TypeStats]:
        """Counts by status, reuse and time to done per type, for rows created since ``since``."""
        reused_from = jobs.c.output_data["reused_from"].as_string()
        query = sa.select(
            jobs.c.type, jobs.c.status, jobs.c.created_at, jobs.c.completed_at, reused_from.label("reused_from")
        ).where(jobs.c.created_at >= since)
        out: dict[str, TypeStats] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(query):
                entry = out.setdefault(r.type, TypeStats(r.type))
                status = r.status or PENDING
                entry.by_status[status] = entry.by_status.get(status, 0) + 1
                if status != DONE or r.completed_at is None or r.created_at is None:
                    continue
                seconds = (r.completed_at - r.created_at).total_seconds()
                if r.reused_from:
                    entry.reused_seconds.append(seconds)
                else:
                    entry.processed_seconds.append(seconds)
        return sorted(out.values(), key=lambda e: e.job_type)
