"""Helpers for the crash, restart and load tests: a restartable daemon, bulk rows, counters.

Everything runs on 127.0.0.1: PostgreSQL (the suite's server, or a private cluster the test
owns), moto's S3 server, the in-process fake Replicate and real ``dagster-daemon`` processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import sqlalchemy as sa
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from nolly_pipeline.storage.objects import S3ObjectStore
from nolly_pipeline_tests.e2e.daemon import spawn_daemon, wait_until, write_instance_yaml
from nolly_pipeline_tests.fakes.replicate_api import FakeReplicate
from nolly_pipeline_tests.fakes.versions import ROTO_VERSION
from nolly_pipeline_tests.processes import cmdline, proc_stat, session_pids
from nolly_pipeline_tests.seed import insert_job

JOB_ID_TAG, ATTEMPT_TAG, RUN_KEY_TAG = "nolly/job_id", "nolly/attempt", "dagster/run_key"


def daemon_env(
    home: Path, jobs_url: str, s3_endpoint: str, fake: FakeReplicate, intermediates: str, **extra: str
) -> dict[str, str]:
    """The environment of a production-like daemon, with fast sensors."""
    env = {
        "DAGSTER_HOME": str(home),
        "NOLLY_DATABASE_URL": jobs_url,
        "NOLLY_STORAGE": "s3",
        "NOLLY_S3_ENDPOINT_URL": s3_endpoint,
        "NOLLY_INTERMEDIATE_BUCKET": intermediates,
        "NOLLY_WORK_DIR": str(home / "work"),
        "REPLICATE_API_TOKEN": "test-token",
        "REPLICATE_BASE_URL": fake.base_url,
        "NOLLY_REPLICATE_POLL_SECONDS": "0.2",
        "NOLLY_REPLICATE_MODEL_COLOR_GRADE": "studio/grade",
        "NOLLY_REPLICATE_INPUT_COLOR_GRADE": '{"file_input": "input_video"}',
        "NOLLY_SENSOR_INTERVAL_SECONDS": "1",
    }
    env.update(extra)
    return env


class Daemon:
    """A ``dagster-daemon run`` in its own session, so a kill takes its whole process group
    (daemon threads, code server and the run workers it spawned) like a lost machine would."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> "Daemon":
        assert self.proc is None or self.proc.poll() is not None
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n===== daemon start #{self.starts} =====\n".encode())
        log.flush()
        self.proc = spawn_daemon(self.env, log)
        log.close()
        return self

    @property
    def pgid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (the session this daemon leads) and reap the leader."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        # Stragglers of the group (run workers reparented to init) must not survive a kill -9.
        if sig == signal.SIGKILL:
            for pid in session_pids(self.proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def stop(self) -> None:
        """Graceful stop, then kill whatever is left of the group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
        self.kill(signal.SIGKILL)

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def _open_paths(pid: int) -> list[str]:
    out = []
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                out.append(os.readlink(fd))
            except OSError:
                continue
    except OSError:
        pass
    return out


def run_worker_pids(sid: int, run_id: str) -> list[int]:
    """The process(es) executing ``run_id``.

    Each run worker is forked from the launcher's zygote and keeps the zygote's command line,
    so the run id is NOT on any command line; the worker is recognised by the run's compute-log
    files it holds open (``$DAGSTER_HOME/storage/<run_id>/compute_logs/...``) or, failing
    that, by a ``dagster api execute_run`` command line (other launch paths).
    """
    found = []
    for pid in session_pids(sid):
        line = cmdline(pid)
        if "python" not in line and "dagster" not in line:
            continue
        if run_id in line or any(run_id in p for p in _open_paths(pid)):
            found.append(pid)
    return found


def upload_inputs(s3: S3ObjectStore, tmp: Path, data: bytes, keys: Iterable[str], bucket: str = "vfx-assets") -> None:
    path = tmp / "upload.bin"
    path.write_bytes(data)
    for key in keys:
        s3.upload(path, bucket, key)


def insert_rows(
    engine: sa.Engine, rows: list[tuple[str, uuid.UUID, str]], max_attempts: int | None = None
) -> list[uuid.UUID]:
    """Insert (type, user, file_url) rows as the frontend does, in one transaction."""
    with engine.begin() as conn:
        return [insert_job(conn, job_type, {"file_url": url, "settings": {}}, user, max_attempts)
                for job_type, user, url in rows]


def status_counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {s: n for s, n in conn.execute(sa.text("SELECT status, count(*) FROM jobs GROUP BY status")).all()}


def notification_counts(engine: sa.Engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter({str(j): n for j, n in conn.execute(
            sa.text("SELECT job_id, count(*) FROM notifications GROUP BY job_id")).all()})


def rows(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        return {str(r["id"]): dict(r) for r in conn.execute(sa.text("SELECT * FROM jobs")).mappings()}


@dataclass
class RunCensus:
    """Dagster's run records for the nolly jobs, grouped the ways the tests check them."""

    total: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    success_by_job: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    runs_by_key: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    runs_by_attempt: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    success_attempt: dict[str, str] = field(default_factory=dict)

    @property
    def duplicate_keys(self) -> dict[str, list[str]]:
        return {k: v for k, v in self.runs_by_key.items() if len(v) > 1}

    @property
    def duplicate_attempts(self) -> dict[tuple[str, str], list[str]]:
        return {k: v for k, v in self.runs_by_attempt.items() if len(v) > 1}


def run_census(home: Path, job_ids: Iterable[Any]) -> RunCensus:
    """Count runs through ``DagsterInstance.get_runs`` with tag filters, one job at a time."""
    census = RunCensus()
    instance = DagsterInstance.from_config(str(home))
    try:
        for job_id in job_ids:
            for run in instance.get_runs(filters=RunsFilter(tags={JOB_ID_TAG: str(job_id)})):
                census.total += 1
                census.by_status[run.status.value] += 1
                attempt = run.tags.get(ATTEMPT_TAG, "?")
                census.runs_by_attempt[(str(job_id), attempt)].append(run.run_id)
                if RUN_KEY_TAG in run.tags:
                    census.runs_by_key[run.tags[RUN_KEY_TAG]].append(run.run_id)
                if run.status == DagsterRunStatus.SUCCESS:
                    census.success_by_job[str(job_id)].append(run.run_id)
                    census.success_attempt[str(job_id)] = attempt
    finally:
        instance.dispose()
    return census


def run_failure_messages(home: Path, run_id: str) -> list[str]:
    """The messages of the failures Dagster recorded for a run (a reconciler's among them)."""
    instance = DagsterInstance.from_config(str(home))
    try:
        entries = instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)
        return [e.dagster_event.message or "" for e in entries if e.dagster_event is not None]
    finally:
        instance.dispose()


def wait_runs_finished(home: Path, timeout: float = 120) -> float:
    """Wait until Dagster has no run in flight. Rows are written by the hooks a moment before
    a run records RUN_SUCCESS, so stopping the daemon as soon as every row is terminal could
    kill the last workers before their runs are finished in Dagster's records."""
    unfinished = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
                  DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]

    def idle() -> bool:
        instance = DagsterInstance.from_config(str(home))
        try:
            return not instance.get_runs(filters=RunsFilter(statuses=unfinished), limit=1)
        finally:
            instance.dispose()

    return wait_until(idle, timeout, interval=1, what="no run in flight")


def instance_concurrency(max_runs: int, per_user: int = 2, per_type: int | None = None) -> dict[str, Any]:
    """A ``concurrency`` section for write_instance_yaml(extra=...)."""
    limits: list[dict[str, Any]] = [
        {"key": "nolly/user_id", "value": {"applyLimitPerUniqueValue": True}, "limit": per_user}
    ]
    if per_type:
        limits += [{"key": "nolly/job_type", "value": t, "limit": per_type} for t in ("roto", "color-grade", "audio-clean")]
    return {"concurrency": {"runs": {"max_concurrent_runs": max_runs, "tag_concurrency_limits": limits},
                            "pools": {"granularity": "op", "default_limit": max_runs}}}


__all__ = [
    "Daemon", "ROTO_VERSION", "daemon_env", "insert_rows", "instance_concurrency", "notification_counts", "proc_stat",
    "rows", "run_census", "run_worker_pids", "session_pids", "status_counts", "upload_inputs", "wait_until",
    "write_instance_yaml",
]
