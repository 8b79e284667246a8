"""The Dagster code location: assets, jobs, sensors and resources for this environment.

The environment is read once, in :class:`~nolly_pipeline.config.Settings`; secrets are
passed as ``EnvVar`` so Dagster resolves them at run time and never shows their values.
"""

from __future__ import annotations

import datetime as dt
import os

from dagster import Definitions, EnvVar, get_dagster_logger, in_process_executor

from nolly_pipeline.config import Settings
from nolly_pipeline.orchestration.assets import build_all_job_type_defs
from nolly_pipeline.orchestration.io_manager import MediaIOManager
from nolly_pipeline.orchestration.job_stats import job_stats, job_stats_job, job_stats_schedule
from nolly_pipeline.orchestration.reconciler import (
    ReconcilerPolicy,
    build_cancellation_sensor,
    build_reconciler_sensor,
)
from nolly_pipeline.orchestration.resources import (
    InputPolicyResource,
    JobStoreResource,
    ObjectStorageResource,
    PredictorsResource,
    ScratchResource,
)
from nolly_pipeline.orchestration.retention import build_retention_sensor
from nolly_pipeline.orchestration.sensors import build_dispatch_sensor

CANCELLATION_INTERVAL_SECONDS = 5


def _secret(name: str) -> EnvVar | None:
    """An ``EnvVar`` for a secret that is set, else None (the client's own default applies)."""
    return EnvVar(name) if os.environ.get(name) else None


def build_resources(settings: Settings) -> dict[str, object]:
    database_url: str | EnvVar = (
        EnvVar("NOLLY_DATABASE_URL") if os.environ.get("NOLLY_DATABASE_URL") else settings.database_url
    )
    storage = ObjectStorageResource(
        kind=settings.storage,
        local_dir=str(settings.local_storage_dir),
        endpoint_url=settings.s3_endpoint_url,
        region=settings.aws_region,
        access_key_id=_secret("AWS_ACCESS_KEY_ID"),
        secret_access_key=_secret("AWS_SECRET_ACCESS_KEY"),
        public_base_url=settings.public_base_url,
        output_url_mode=settings.output_url_mode,
        signed_url_seconds=settings.signed_url_seconds,
    )
    scratch = ScratchResource(root=str(settings.work_dir))
    return {
        "job_store": JobStoreResource(
            database_url=database_url, heartbeat_seconds=settings.heartbeat_seconds, reuse_scope=settings.reuse_scope
        ),
        "storage": storage,
        "scratch": scratch,
        "inputs": InputPolicyResource(
            allowed_hosts=list(settings.allowed_input_hosts),
            max_input_bytes=settings.max_input_bytes,
            max_duration_seconds=dict(settings.max_duration_seconds),
        ),
        "predictors": PredictorsResource(
            backends=dict(settings.backends),
            replicate_models={k: list(v) for k, v in settings.replicate_models.items()},
            replicate_api_token=_secret("REPLICATE_API_TOKEN"),
            replicate_base_url=settings.replicate_base_url,
            replicate_timeout_seconds=settings.replicate_timeout_seconds,
            replicate_poll_seconds=settings.replicate_poll_seconds,
            models_dir=str(settings.models_dir),
        ),
        # Intermediate media between ops, and the asset value (output_data JSON).
        "io_manager": MediaIOManager(
            storage=storage,
            scratch=scratch,
            bucket=settings.intermediate_bucket,
            prefix=settings.intermediate_prefix,
        ),
    }


def log_backends(settings: Settings) -> None:
    """One line per job type naming its backend, so an operator sees at start-up what serves what."""
    log = get_dagster_logger("nolly_pipeline")
    for job_type, backend in settings.backend_summary().items():
        log.info("%s: %s", job_type, backend)


def build_definitions(settings: Settings | None = None) -> Definitions:
    settings = settings or Settings.from_env()
    log_backends(settings)
    type_defs = build_all_job_type_defs(settings.backends)
    jobs = [d.job for d in type_defs.values()]
    return Definitions(
        assets=[*(d.asset for d in type_defs.values()), job_stats],
        jobs=[*jobs, job_stats_job],
        schedules=[job_stats_schedule],
        sensors=[
            build_dispatch_sensor(jobs, settings.sensor_interval_seconds, settings.sensor_batch_size),
            build_reconciler_sensor(
                settings.reconciler_interval_seconds,
                ReconcilerPolicy(
                    dispatch_grace=dt.timedelta(seconds=settings.dispatch_grace_seconds),
                    heartbeat_timeout=dt.timedelta(seconds=settings.heartbeat_timeout_seconds),
                ),
            ),
            build_cancellation_sensor(CANCELLATION_INTERVAL_SECONDS),
            build_retention_sensor(settings.partition_retention_days),
        ],
        resources=build_resources(settings),
        # Also the executor of the implicit asset job (the UI's "Materialize" and backfills):
        # one process per run, as the row's ownership fencing expects (see assets.py).
        executor=in_process_executor,
    )


defs = build_definitions()
