"""The row types of ``jobs`` as the pipeline reads them, and the clock its writes use."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa


def utcnow() -> dt.datetime:
    """Naive UTC, matching the seed's ``TIMESTAMP`` (without time zone) columns."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class JobRow:
    id: uuid.UUID
    user_id: uuid.UUID
    project_id: uuid.UUID | None
    type: str
    status: str | None
    input_data: Any
    output_data: Any
    error_message: str | None
    created_at: dt.datetime | None
    completed_at: dt.datetime | None
    attempt: int
    dispatched_at: dt.datetime | None
    started_at: dt.datetime | None
    updated_at: dt.datetime | None
    dagster_run_id: str | None
    cancel_requested_at: dt.datetime | None
    max_attempts: int
    progress: float | None
    phase: str | None
    reuse_key: str | None

    @property
    def attempts_left(self) -> int:
        """Attempts after this one that the row's budget still allows."""
        return self.max_attempts - self.attempt

    @classmethod
    def from_mapping(cls, row: sa.RowMapping) -> "JobRow":
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    def as_json(self) -> dict[str, Any]:
        """The row as the frontend would read it, JSON-ready."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, (uuid.UUID, dt.datetime)):
                value = str(value) if isinstance(value, uuid.UUID) else value.isoformat()
            out[name] = value
        return out


@dataclass(frozen=True)
class RunIdentity:
    """How a run relates to the row it works on (derived from its tags, see ``ops.run_identity``)."""

    run_id: str
    # The attempt the sensor dispatched this run for; None for runs launched from the UI
    # (Materialize, the launchpad, backfills, "re-execute all"), which start a new attempt.
    attempt: int | None
    # For a resume ("re-execute from failure"): the runs whose attempt it continues (parent,
    # root). Empty for every other run.
    resumes: tuple[str, ...] = ()
    # "host:pid" of the worker process; None when acting from outside a worker.
    worker: str | None = None


@dataclass
class TypeStats:
    """One job type's numbers over a window (``nolly-pipeline stats``)."""

    job_type: str
    by_status: dict[str, int] = field(default_factory=dict)
    # Seconds from submission (created_at) to done; reused rows are those whose outputs
    # were copied from an earlier identical job.
    processed_seconds: list[float] = field(default_factory=list)
    reused_seconds: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def reused(self) -> int:
        return len(self.reused_seconds)


def as_uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
