"""Daily statistics of the ``jobs`` table: what the ``job_stats`` report asset shows.

A job belongs to the day it was created (UTC). Queue wait is ``started_at - created_at``
(time until a worker took its latest attempt), processing is ``completed_at - started_at``
of finished jobs. One indexed range read of five columns per day, aggregated here, so the
same code serves SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import sqlalchemy as sa

from nolly_pipeline.db.tables import DONE, FAILED, PENDING, RUNNING, jobs
from nolly_pipeline.job_types import JOB_TYPES

STATUSES = (PENDING, RUNNING, DONE, FAILED)
_MESSAGE_CHARS = 160  # failure messages are grouped on this prefix


@dataclass(frozen=True)
class TypeStats:
    job_type: str
    counts: dict[str, int]
    queue_wait_p50: float | None = None  # seconds
    queue_wait_p95: float | None = None
    processing_p50: float | None = None
    processing_p95: float | None = None
    top_failures: list[tuple[str, int]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "top_failures": [{"message": m, "count": c} for m, c in self.top_failures]}


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def daily_job_stats(engine: sa.Engine, day: dt.date, top: int = 5) -> dict[str, TypeStats]:
    """Per job type (every registered type, plus any other found), the stats of jobs created on ``day``."""
    start = dt.datetime.combine(day, dt.time())
    query = sa.select(
        jobs.c.type, jobs.c.status, jobs.c.created_at, jobs.c.started_at, jobs.c.completed_at, jobs.c.error_message
    ).where(jobs.c.created_at >= start, jobs.c.created_at < start + dt.timedelta(days=1))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    types = list(JOB_TYPES) + sorted({r.type for r in rows} - set(JOB_TYPES))
    result = {}
    for job_type in types:
        mine = [r for r in rows if r.type == job_type]
        counts = Counter(r.status for r in mine)
        waits = [(r.started_at - r.created_at).total_seconds() for r in mine if r.started_at and r.created_at]
        spans = [(r.completed_at - r.started_at).total_seconds() for r in mine
                 if r.completed_at and r.started_at and r.completed_at >= r.started_at]
        failures = Counter((r.error_message or "(no message)")[:_MESSAGE_CHARS] for r in mine if r.status == FAILED)
        result[job_type] = TypeStats(
            job_type=job_type,
            counts={s: counts.get(s, 0) for s in STATUSES} | {s: n for s, n in counts.items() if s not in STATUSES},
            queue_wait_p50=percentile(waits, 50), queue_wait_p95=percentile(waits, 95),
            processing_p50=percentile(spans, 50), processing_p95=percentile(spans, 95),
            top_failures=failures.most_common(top),
        )
    return result
