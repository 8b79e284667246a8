"""Every write of ``jobs`` and ``notifications`` the pipeline makes (reads: ``job_reads.py``).

The rules that keep a job from being lost or doubled live here, as SQL conditions:

* dispatch: the sensor *claims* pending rows (``dispatched_at``) and bumps ``attempt`` in one
  statement, so two sensor ticks (or two daemons) never dispatch the same attempt twice;
* ownership: a run takes the row (``dagster_run_id``) before it works on it, under conditions
  that depend on how the run was launched (see :meth:`JobStore.start_run`);
* fencing: terminal writes require ``dagster_run_id = <this run> AND status = 'running'``, so a
  stale run can never overwrite a newer attempt, and a second write is a no-op;
* one notification per terminal transition, inserted in the same transaction as the write.

All statements use bound parameters; nothing here formats user data into SQL.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Iterable

import sqlalchemy as sa

from nolly_pipeline.db.job_reads import JobReads
from nolly_pipeline.db.job_rows import JobRow, RunIdentity, as_uuid, utcnow
from nolly_pipeline.db.tables import DONE, FAILED, PENDING, QUEUED, RUNNING, jobs, notifications
from nolly_pipeline.errors import CanceledError, StaleRunError
from nolly_pipeline.job_types import label as _label


class JobStore(JobReads):
    """Typed access to the two tables over one SQLAlchemy engine: the reads of
    :class:`JobReads`, and every write."""

    # --- inserts (the frontend's side; used by the CLI and tests) ---------------------------
    def insert_job(
        self,
        job_type: str,
        input_data: Any,
        user_id: uuid.UUID | str,
        project_id: uuid.UUID | str | None = None,
    ) -> uuid.UUID:
        job_id = uuid.uuid4()
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(jobs).values(
                    id=job_id,
                    user_id=as_uuid(user_id),
                    project_id=as_uuid(project_id) if project_id else None,
                    type=job_type,
                    status=PENDING,
                    input_data=input_data,
                    created_at=utcnow(),
                )
            )
        return job_id

    def request_retry(self, job_id: uuid.UUID | str) -> bool:
        """The frontend's retry, verbatim: ``UPDATE jobs SET status = 'pending' WHERE id = $1``."""
        with self.engine.begin() as conn:
            result = conn.execute(sa.update(jobs).where(jobs.c.id == as_uuid(job_id)).values(status=PENDING))
        return result.rowcount == 1

    def request_cancel(self, job_id: uuid.UUID | str) -> bool:
        """The frontend's cancel, verbatim: ``UPDATE jobs SET cancel_requested_at = now() WHERE id = $1``."""
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(jobs).where(jobs.c.id == as_uuid(job_id)).values(cancel_requested_at=sa.func.now())
            )
        return result.rowcount == 1

    # --- dispatch (sensor) ----------------------------------------------------------------
    def claim_dispatchable(self, limit: int) -> list[JobRow]:
        """Atomically claim up to ``limit`` new pending rows and start a new attempt on each.

        Uses the partial index ``ix_jobs_dispatchable``, so the cost grows with the number of
        new rows, not with the backlog of claimed ones. ``SKIP LOCKED`` keeps two concurrent
        claimers (two daemons by mistake) from both taking a row on PostgreSQL; SQLite
        serialises writers anyway.
        """
        dispatchable = sa.and_(jobs.c.status == PENDING, jobs.c.dispatched_at.is_(None))
        # A MATERIALIZED CTE, not "IN (subquery)": PostgreSQL may re-run a LIMIT subquery
        # per outer row, which lets one statement claim more than ``limit`` rows.
        picked = (
            sa.select(jobs.c.id)
            .where(dispatchable)
            .order_by(jobs.c.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("picked")
            .prefix_with("MATERIALIZED")
        )
        now = utcnow()
        stmt = (
            sa.update(jobs)
            .where(jobs.c.id.in_(sa.select(picked.c.id)), dispatchable)
            .values(
                attempt=jobs.c.attempt + 1,
                dispatched_at=now,
                updated_at=now,
                dagster_run_id=None,
                error_message=None,
                output_data=None,
                completed_at=None,
                started_at=None,
                progress=None,
                phase=QUEUED,
                reuse_key=None,  # belongs to an attempt: this one's download computes it
            )
            .returning(*jobs.c)
        )
        with self.engine.begin() as conn:
            rows = [JobRow.from_mapping(r) for r in conn.execute(stmt).mappings()]
        return sorted(rows, key=lambda r: (r.created_at or now, str(r.id)))

    def reject_dispatch(self, row: JobRow, message: str) -> bool:
        """Fail a claimed row that cannot run at all (malformed row, bad URL): no run exists."""
        return self._finish(self._unstarted(row), row, FAILED, message, None, f"dispatch:{row.attempt}")

    def release_dispatch(self, row: JobRow) -> bool:
        """Undo a claim whose run was never created (daemon died between claim and launch)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(jobs)
                .where(self._unstarted(row))
                .values(dispatched_at=None, phase=None, updated_at=utcnow())
            )
        return result.rowcount == 1

    # --- ownership (runs) -----------------------------------------------------------------
    def start_run(self, job_id: uuid.UUID | str, run: RunIdentity, phase: str | None = None) -> JobRow:
        """Take the row for ``run`` (idempotent per run) and mark it running; with ``phase``,
        also say what the run does now (see :meth:`set_phase`), in the same transaction.

        * sensor runs own exactly the attempt they were dispatched for, from ``pending``;
        * a resume ("re-execute from failure") continues the attempt it re-executes if that
          has not moved on (``pending`` or ``failed``);
        * any other launch from the UI (Materialize, the launchpad, a backfill, "re-execute
          all") starts a new attempt on any row not running now; a row that is running is
          refused, and its attempt is left alone.

        Raises :class:`StaleRunError` when the row belongs to another attempt or run.
        """
        job_id = as_uuid(job_id)
        now = utcnow()
        mine = self._owned_by(job_id, run.run_id, run.worker)
        take = dict(
            status=RUNNING,
            dagster_run_id=run.run_id,
            worker_id=run.worker,
            started_at=now,
            updated_at=now,
            completed_at=None,
            error_message=None,
            output_data=None,
        )
        touch: dict[str, Any] = {"updated_at": now}
        if phase is not None:
            take["phase"] = touch["phase"] = phase
        not_canceled = jobs.c.cancel_requested_at.is_(None)
        if run.resumes:
            # The attempt this run resumes: named by the sensor's tag, or else the last one a
            # run of the same re-execution family took (UI launches carry no attempt tag).
            same_attempt = (
                jobs.c.attempt == run.attempt if run.attempt is not None
                else jobs.c.dagster_run_id.in_(run.resumes)
            )
            cond = sa.and_(jobs.c.id == job_id, same_attempt, jobs.c.status.in_([PENDING, FAILED]))
            take["dispatched_at"] = now
        elif run.attempt is None:
            cond = sa.and_(jobs.c.id == job_id, jobs.c.status != RUNNING)
            take["attempt"] = jobs.c.attempt + 1
            take["dispatched_at"] = now
            take["reuse_key"] = None  # the new attempt's download computes it afresh
        else:
            cond = sa.and_(jobs.c.id == job_id, jobs.c.attempt == run.attempt, jobs.c.status == PENDING)
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.update(jobs).where(mine).values(**touch).returning(*jobs.c)
            ).mappings().first()
            if row is None:
                row = conn.execute(
                    sa.update(jobs).where(cond, not_canceled).values(**take).returning(*jobs.c)
                ).mappings().first()
        if row is None:
            current = self.get(job_id)
            if current is None:
                raise StaleRunError(f"job {job_id} does not exist")
            if current.cancel_requested_at is not None and current.status != RUNNING:
                raise CanceledError()
            if current.status == RUNNING:
                raise StaleRunError(
                    f"job {job_id} is already being processed (attempt {current.attempt}, run "
                    f"{current.dagster_run_id}); this run was refused and left that attempt untouched"
                )
            raise StaleRunError(
                f"job {job_id} is not this run's to process "
                f"(status {current.status}, attempt {current.attempt}, run {current.dagster_run_id})"
            )
        return JobRow.from_mapping(row)

    def heartbeat(
        self, job_id: uuid.UUID | str, run_id: str, progress: float | None = None, worker: str | None = None
    ) -> None:
        """Touch ``updated_at`` (and progress) while a run works on the row.

        Raises :class:`CanceledError` when the user asked to cancel, :class:`StaleRunError`
        when the row no longer belongs to this run: either way the work must stop.
        """
        values: dict[str, Any] = {"updated_at": utcnow()}
        if progress is not None:
            values["progress"] = progress
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(jobs)
                .where(
                    self._owned_by(as_uuid(job_id), run_id, worker),
                    jobs.c.cancel_requested_at.is_(None),
                )
                .values(**values)
            )
        if result.rowcount == 1:
            return
        row = self.get(job_id)
        if row is not None and row.dagster_run_id == run_id and row.cancel_requested_at is not None:
            raise CanceledError()
        raise StaleRunError(f"job {job_id} was taken over while this run worked on it")

    def set_phase(
        self, job_id: uuid.UUID | str, run: RunIdentity, phase: str, reuse_key: str | None = None
    ) -> bool:
        """Say what the run is doing now (``downloading``, ``processing``, ``uploading``) for
        the frontend, and record the job's result-reuse key once it is known. Fenced on the
        run owning the row; False when it no longer does (the next heartbeat stops the op)."""
        values: dict[str, Any] = {"phase": phase, "updated_at": utcnow()}
        if reuse_key is not None:
            values["reuse_key"] = reuse_key
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(jobs).where(self._owned_by(as_uuid(job_id), run.run_id, run.worker)).values(**values)
            )
        return result.rowcount == 1

    def requeue(self, row: JobRow, reason: str) -> bool:
        """Give a row whose run died back to the dispatcher for a new attempt (fenced)."""
        assert row.dagster_run_id is not None
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(jobs)
                .where(self._owned_by(row.id, row.dagster_run_id))
                .values(
                    status=PENDING,
                    dispatched_at=None,
                    dagster_run_id=None,
                    error_message=reason,
                    progress=None,
                    phase=None,
                    updated_at=utcnow(),
                )
            )
        return result.rowcount == 1

    def cancel_unstarted(self, row: JobRow) -> bool:
        """Cancel a pending row (dispatched or not) before any run took it."""
        return self._finish(self._unstarted(row), row, FAILED, CanceledError().message, None, f"cancel:{row.attempt}")

    # --- terminal writes ------------------------------------------------------------------
    def finish_done(
        self, job: JobRow | uuid.UUID | str, run_id: str, output_data: dict[str, Any], worker: str | None = None
    ) -> bool:
        """``job``: the row (a caller that holds one saves a read) or its id. Fenced on ``run_id``."""
        row = job if isinstance(job, JobRow) else self.get(job)
        if row is None:
            return False
        # A cancel that arrived while the last step ran still wins: the user asked for it.
        cond = sa.and_(self._owned_by(row.id, run_id, worker), jobs.c.cancel_requested_at.is_(None))
        return self._finish(cond, row, DONE, None, output_data, run_id)

    def finish_failed(
        self, job: JobRow | uuid.UUID | str, run_id: str, message: str, worker: str | None = None
    ) -> bool:
        """``job``: the row (a caller that holds one saves a read) or its id. Fenced on ``run_id``."""
        row = job if isinstance(job, JobRow) else self.get(job)
        if row is None:
            return False
        return self._finish(self._owned_by(row.id, run_id, worker), row, FAILED, message, None, run_id)

    @staticmethod
    def _unstarted(row: JobRow) -> sa.ColumnElement[bool]:
        """Still the attempt ``row`` was read at, pending, and taken by no run."""
        return sa.and_(
            jobs.c.id == row.id,
            jobs.c.attempt == row.attempt,
            jobs.c.status == PENDING,
            jobs.c.dagster_run_id.is_(None),
        )

    @staticmethod
    def _owned_by(job_id: uuid.UUID, run_id: str, worker: str | None = None) -> sa.ColumnElement[bool]:
        """The row is running under this run (and, from inside a worker, this worker process)."""
        cond = sa.and_(jobs.c.id == job_id, jobs.c.dagster_run_id == run_id, jobs.c.status == RUNNING)
        return sa.and_(cond, jobs.c.worker_id == worker) if worker is not None else cond

    def _finish(
        self,
        cond: sa.ColumnElement[bool],
        row: JobRow,
        status: str,
        message: str | None,
        output_data: dict[str, Any] | None,
        event_key: str,
    ) -> bool:
        """Fenced terminal write plus its notification, in one transaction. True if it wrote."""
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(jobs)
                .where(cond)
                .values(
                    status=status,
                    error_message=message,
                    output_data=output_data,
                    completed_at=now,
                    updated_at=now,
                    dispatched_at=None,
                    cancel_requested_at=None,
                    progress=1.0 if status == DONE else None,
                    phase=None,
                )
            )
            if result.rowcount != 1:
                return False
            conn.execute(sa.insert(notifications).values(**_notification(row, status, message, event_key, now)))
        return True


def _notification(
    row: JobRow, status: str, message: str | None, event_key: str, now: dt.datetime
) -> dict[str, Any]:
    label = _label(row.type)
    if status == DONE:
        title, text, kind = f"{label} finished", f"Your {label.lower()} job is ready to download.", "job_done"
    else:
        title, text, kind = f"{label} failed", message or "The job failed.", "job_failed"
    return dict(
        id=uuid.uuid4(),
        user_id=row.user_id,
        job_id=row.id,
        kind=kind,
        title=title,
        message=text,
        read=False,
        created_at=now,
        event_key=event_key,
    )


def count_rows(engine: sa.Engine, table: sa.Table, statuses: Iterable[str] | None = None) -> int:
    """Row count, optionally restricted to ``jobs.status`` values (tests and benchmarks)."""
    stmt = sa.select(sa.func.count()).select_from(table)
    if statuses is not None:
        stmt = stmt.where(table.c.status.in_(list(statuses)))
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())
