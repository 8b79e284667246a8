"""``nolly-pipeline``: set up the schema and buckets, submit a job as the frontend would, read a row."""

from __future__ import annotations

import argparse
import json
import mimetypes
import sys
import uuid
from pathlib import Path

from nolly_pipeline.config import Settings
from nolly_pipeline.db import migrate as db_migrate
from nolly_pipeline.db.engine import get_engine
from nolly_pipeline.db.jobs import JobStore
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
    job_id = JobStore(get_engine(settings.database_url)).insert_job(
        job_type.name, {"file_url": file_url, "settings": settings_json}, args.user
    )
    print(job_id)
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    row = JobStore(get_engine(settings.database_url)).get(args.job_id)
    if row is None:
        print(f"no job {args.job_id}", file=sys.stderr)
        return 1
    print(json.dumps(row.as_json(), indent=2, default=str))
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
    submit.set_defaults(func=cmd_submit)
    status = sub.add_parser("status", help="print a job row as JSON")
    status.add_argument("job_id", type=uuid.UUID)
    status.set_defaults(func=cmd_status)
    models = sub.add_parser("models", help="local model files")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    models_sub.add_parser("fetch", help="fetch and verify the roto and denoise models").set_defaults(func=cmd_models_fetch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(Settings.from_env(), args)


if __name__ == "__main__":
    sys.exit(main())
