"""``nolly-pipeline``: set up the schema and buckets, submit and follow jobs, and run the queue.

Everything goes through :class:`~nolly_pipeline.db.jobs.JobStore`; ``retry`` and ``cancel``
issue exactly the frontend's statements from the README, so the pipeline cannot tell an
operator from an editor. Exit codes suit scripts: 0 done, 1 failed (or refused), 2 usage
error or unknown job, 124 ``--timeout`` reached.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import mimetypes
import sys
import uuid
from pathlib import Path
from typing import Callable

from nolly_pipeline import console as views
from nolly_pipeline.config import Settings
from nolly_pipeline.db import migrate as db_migrate
from nolly_pipeline.db.engine import get_engine
from nolly_pipeline.db.job_rows import JobRow, utcnow
from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline.db.tables import DONE, FAILED, PENDING, RUNNING, TERMINAL_STATUSES
from nolly_pipeline.job_types import JOB_TYPES
from nolly_pipeline.storage.objects import LocalObjectStore, ObjectStore, S3ObjectStore
from nolly_pipeline.storage.urls import ObjectRef, public_url

# The user that CLI submissions belong to unless --user is given.
DEFAULT_USER = uuid.UUID("00000000-0000-4000-8000-000000000001")


def object_store(settings: Settings) -> ObjectStore:
    """The storage named by the environment, with credentials from boto3's usual chain."""
    if settings.storage == "s3":
        return S3ObjectStore.connect(settings.s3_endpoint_url, settings.aws_region)
    return LocalObjectStore(settings.local_storage_dir)


def job_store(settings: Settings) -> JobStore:
    return JobStore(get_engine(settings.database_url))


def cmd_migrate(settings: Settings, _: argparse.Namespace) -> int:
    revision = db_migrate.upgrade(get_engine(settings.database_url))
    print(f"database at revision {revision}")
    try:
        object_store(settings).ensure_buckets(settings.buckets)
        print(f"buckets ready: {', '.join(settings.buckets)}")
    except Exception as exc:  # noqa: BLE001 - buckets may be managed elsewhere (e.g. Supabase UI)
        print(f"warning: could not create buckets ({type(exc).__name__}); create them yourself", file=sys.stderr)
    return 0


def cmd_submit(settings: Settings, args: argparse.Namespace) -> int:
    job_type = JOB_TYPES.get(args.type)
    if job_type is None:
        print(f"unknown job type {args.type!r}; choose from {', '.join(JOB_TYPES)}", file=sys.stderr)
        return 2
    path = Path(args.path)
    if not path.is_file():
        print(f"no such file: {path}", file=sys.stderr)
        return 2
    settings_json = json.loads(args.settings) if args.settings else {}
    store = object_store(settings)
    store.ensure_buckets(settings.buckets)
    ref = ObjectRef(job_type.input_bucket, f"{args.user}/{uuid.uuid4().hex[:12]}-{path.name}")
    store.upload(path, ref.bucket, ref.key, mimetypes.guess_type(path.name)[0])
    file_url = (
        public_url(settings.public_base_url, ref) if settings.public_base_url else f"s3://{ref.bucket}/{ref.key}"
    )
    store = job_store(settings)
    job_id = store.insert_job(job_type.name, {"file_url": file_url, "settings": settings_json}, args.user)
    print(job_id, flush=True)
    return _watch(store, [job_id], args) if args.wait else 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    row = job_store(settings).get(args.job_id)
    if row is None:
        print(f"no job {args.job_id}", file=sys.stderr)
        return 1
    print(json.dumps(row.as_json(), indent=2, default=str))
    return 0


def cmd_jobs(settings: Settings, args: argparse.Namespace) -> int:
    rows = job_store(settings).list_jobs(
        status=args.status, job_type=args.type, user_id=args.user, since=args.since, limit=args.limit
    )
    if args.json:
        print(json.dumps([r.as_json() for r in rows], indent=2, default=str))
    else:
        views.make_console().print(views.jobs_table(rows))
    return 0


def _watch(store: JobStore, job_ids: list[uuid.UUID], args: argparse.Namespace) -> int:
    return views.watch(store, job_ids, views.make_console(), interval=args.interval, timeout=args.timeout)


def cmd_watch(settings: Settings, args: argparse.Namespace) -> int:
    return _watch(job_store(settings), args.job_ids, args)


def _applicable(store: JobStore, job_id: uuid.UUID, refusal: Callable[[JobRow], str | None]) -> JobRow | None:
    """The job, or None after saying why the command does not apply to it."""
    row = store.get(job_id)
    reason = f"no job {job_id}" if row is None else refusal(row)
    if reason:
        print(reason, file=sys.stderr)
        return None
    return row


def _retry_refusal(row: JobRow) -> str | None:
    if row.status != FAILED:
        return f"job {row.id} is {row.status}; only a failed job can be retried"
    if row.attempts_left <= 0:
        return f"job {row.id} has used all {row.max_attempts} attempts; submit it again as a new job"
    return None


def cmd_retry(settings: Settings, args: argparse.Namespace) -> int:
    store = job_store(settings)
    row = _applicable(store, args.job_id, _retry_refusal)
    if row is None:
        return 1
    store.request_retry(row.id)
    print(f"job {row.id} is pending again (attempt {row.attempt + 1} of {row.max_attempts})", flush=True)
    return _watch(store, [row.id], args) if args.wait else 0


def cmd_cancel(settings: Settings, args: argparse.Namespace) -> int:
    store = job_store(settings)
    row = _applicable(
        store, args.job_id, lambda r: f"job {r.id} is already {r.status}" if r.status in TERMINAL_STATUSES else None
    )
    if row is None:
        return 1
    store.request_cancel(row.id)
    print(f"cancel requested for job {row.id}; it ends failed with 'canceled by user' within seconds")
    return 0


def cmd_stats(settings: Settings, args: argparse.Namespace) -> int:
    stats = job_store(settings).stats(utcnow() - dt.timedelta(hours=args.hours))
    if args.json:
        print(json.dumps(views.stats_json(stats), indent=2))
    else:
        views.make_console().print(views.stats_table(stats, args.hours))
    return 0


def cmd_models_fetch(settings: Settings, _: argparse.Namespace) -> int:
    from nolly_pipeline.processing.models import fetch_denoise_model, fetch_models

    fetch_models(settings.models_dir)
    print(fetch_denoise_model(settings.models_dir))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nolly-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create or upgrade the jobs/notifications schema and buckets").set_defaults(
        func=cmd_migrate
    )
    submit = sub.add_parser("submit", help="upload a file and insert a pending job, as the frontend does")
    submit.add_argument("type", help=" | ".join(JOB_TYPES))
    submit.add_argument("path")
    submit.add_argument("--settings", help="JSON object of job settings")
    submit.add_argument("--user", type=uuid.UUID, default=DEFAULT_USER)
    _wait_options(submit, "follow the job until it is final (exit 0 done, 1 failed)")
    submit.set_defaults(func=cmd_submit)
    _job_command(sub, "status", "print a job row as JSON", cmd_status)
    jobs = sub.add_parser("jobs", help="list jobs, newest first")
    jobs.add_argument("--status", choices=(PENDING, RUNNING, DONE, FAILED))
    jobs.add_argument("--type", choices=tuple(JOB_TYPES))
    jobs.add_argument("--user", type=uuid.UUID)
    jobs.add_argument("--since", type=_since, help="30m, 2h, 1d, 1w or an ISO time (UTC)")
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--json", action="store_true", help="rows as JSON, as the frontend reads them")
    jobs.set_defaults(func=cmd_jobs)
    watch = sub.add_parser("watch", help="progress bars until every job is final (exit 0 all done, 1 any failed)")
    watch.add_argument("job_ids", type=uuid.UUID, nargs="+", metavar="ID")
    _wait_options(watch)
    watch.set_defaults(func=cmd_watch)
    retry = _job_command(sub, "retry", "retry a failed job, as the frontend does", cmd_retry)
    _wait_options(retry, "follow the new attempt until it is final")
    _job_command(sub, "cancel", "cancel a pending or running job, as the frontend does", cmd_cancel)
    stats = sub.add_parser("stats", help="jobs of the last day by type: counts, reuse, time to done")
    stats.add_argument("--hours", type=float, default=24.0)
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=cmd_stats)
    models = sub.add_parser("models", help="local model files")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    models_sub.add_parser("fetch", help="fetch and verify the roto and denoise models").set_defaults(func=cmd_models_fetch)
    return parser


def _job_command(sub: "argparse._SubParsersAction[argparse.ArgumentParser]", name: str, help_text: str,
                 func: Callable[[Settings, argparse.Namespace], int]) -> argparse.ArgumentParser:
    """A subcommand that acts on one job id."""
    parser = sub.add_parser(name, help=help_text)
    parser.add_argument("job_id", type=uuid.UUID)
    parser.set_defaults(func=func)
    return parser


def _since(text: str) -> dt.datetime:
    try:
        return views.parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _wait_options(parser: argparse.ArgumentParser, wait_help: str | None = None) -> None:
    """``--wait`` (unless the command always waits), poll interval and timeout."""
    if wait_help:
        parser.add_argument("--wait", action="store_true", help=wait_help)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")
    parser.add_argument("--timeout", type=float, help="give up after this many seconds (exit 124)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(Settings.from_env(), args)


if __name__ == "__main__":
    sys.exit(main())
