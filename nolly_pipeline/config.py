"""Where the environment is read: the one place that decides local vs S3, SQLite vs PostgreSQL.

Everything else receives plain values or Dagster resources built from :class:`Settings`.
With no variables set, the embedded default runs entirely under ``$DAGSTER_HOME``: a SQLite
database, local buckets and local processing backends, so a newcomer needs no cloud account.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping

from nolly_pipeline.job_types import JOB_TYPES, JobType

# The seed's buckets: inputs are uploaded to vfx-assets / audio-uploads, results go to outputs.
OUTPUT_BUCKET = "outputs"
# Intermediates between ops are private working copies; never put them in the public bucket.
DEFAULT_INTERMEDIATE_BUCKET = "pipeline-intermediates"
SEED_BUCKETS: tuple[str, ...] = ("vfx-assets", "audio-uploads", OUTPUT_BUCKET)
# Input limits: a bigger or longer upload is refused before any processing is spent on it.
DEFAULT_MAX_INPUT_BYTES = 5 * 1024**3
DEFAULT_MAX_DURATION_SECONDS = 2 * 3600.0
# Audio cleanup is cheap per second and takes whole interviews or podcast sessions.
DEFAULT_MAX_DURATION_BY_TYPE: Mapping[str, float] = {"audio-clean": 4 * 3600.0}
# Dagster partitions of finished jobs are dropped after this many days (the row stays).
DEFAULT_PARTITION_RETENTION_DAYS = 30
DEFAULT_HEARTBEAT_SECONDS = 10.0  # a running op touches its row this often
DEFAULT_HEARTBEAT_TIMEOUT_SECONDS = 300.0  # a running row untouched this long has a dead worker
DEFAULT_DISPATCH_GRACE_SECONDS = 120.0  # a claimed row not yet taken by its run gets checked
# ...but never before the daemon can have created the runs of a whole sensor tick: one at a
# time, up to 0.75 s each on a busy 2-core machine (a 200-run tick took 2.5 min in the burst
# test, and 36 of its claims were released while their runs were still being created).
DISPATCH_GRACE_SECONDS_PER_RUN = 1.5
MAX_SIGNED_URL_SECONDS = 7 * 24 * 3600  # S3 SigV4's limit, and the default lifetime
# Whose finished jobs a new identical job may take its outputs from (NOLLY_REUSE_SCOPE).
REUSE_SCOPES = ("user", "global", "off")


def dagster_home() -> Path:
    """``$DAGSTER_HOME``, or ``.dagster_home`` in the working directory when unset."""
    return Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home").resolve()


def _env(name: str, env: Mapping[str, str]) -> str | None:
    value = env.get(name)
    return value if value not in (None, "") else None


def _positive(name: str, env: Mapping[str, str], default: float) -> float:
    raw = _env(name, env)
    try:
        value = float(raw) if raw is not None else default
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return value


def _host_list(raw: str | None) -> tuple[str, ...]:
    """Host names from a comma-separated list; a URL or a path is a configuration mistake."""
    hosts = tuple(h.strip().lower() for h in (raw or "").split(",") if h.strip())
    for host in hosts:
        if any(c in host for c in "/:@ "):
            raise ValueError(f"NOLLY_ALLOWED_INPUT_HOSTS takes host names only, got {host!r}")
    return hosts


def _backend(job_type: JobType, env: Mapping[str, str], token_set: bool, model_ref: str | None) -> str:
    """``local`` or ``replicate`` for one type: ``NOLLY_BACKEND_<TYPE>``, else by token and model.

    Without an explicit choice a type goes to Replicate only when a token is set and a model
    is known for it (``NOLLY_REPLICATE_MODEL_<TYPE>`` or the registry's default), so a token
    alone never strands a type that has no model (colour grade) on a backend that cannot
    serve it. An explicit ``replicate`` with no model is refused here, when the code
    location loads, rather than by every job of the type later.
    """
    suffix = job_type.env_suffix
    has_model = model_ref is not None or job_type.replicate_default is not None
    explicit = _env(f"NOLLY_BACKEND_{suffix}", env)
    if explicit is None:
        return "replicate" if token_set and has_model else "local"
    backend = explicit.lower()
    if backend not in ("local", "replicate"):
        raise ValueError(f"NOLLY_BACKEND_{suffix} must be 'local' or 'replicate', got {explicit!r}")
    if backend == "replicate" and not has_model:
        raise ValueError(
            f"NOLLY_BACKEND_{suffix}=replicate but {job_type.name} has no default Replicate model: "
            f"set NOLLY_REPLICATE_MODEL_{suffix} (owner/name or owner/name:version) or use the local backend"
        )
    return backend


@dataclass(frozen=True)
class Settings:
    """Non-secret configuration, resolved once. Secrets stay in the environment (see resources)."""

    database_url: str
    storage: Literal["local", "s3"]
    local_storage_dir: Path
    s3_endpoint_url: str | None
    aws_region: str | None
    public_base_url: str | None
    output_url_mode: Literal["public", "signed"]
    signed_url_seconds: int
    replicate_enabled: bool
    replicate_base_url: str | None
    sensor_interval_seconds: int
    heartbeat_seconds: float
    heartbeat_timeout_seconds: float
    reconciler_interval_seconds: int
    dispatch_grace_seconds: float
    sensor_batch_size: int
    replicate_timeout_seconds: float
    replicate_poll_seconds: float
    # job type -> "local" | "replicate" (NOLLY_BACKEND_<TYPE>, default: replicate when a token is
    # set and a model is known for the type, else local; see _backend)
    backends: Mapping[str, str]
    # job type -> (model ref, input mapping JSON) from NOLLY_REPLICATE_MODEL_/INPUT_<TYPE>
    replicate_models: Mapping[str, tuple[str | None, str | None]]
    models_dir: Path
    intermediate_bucket: str
    intermediate_prefix: str
    work_dir: Path
    # Hosts an http(s) file_url may name (NOLLY_ALLOWED_INPUT_HOSTS, comma-separated; none by
    # default, so only the studio's storage is read).
    allowed_input_hosts: tuple[str, ...]
    max_input_bytes: int
    # job type -> longest accepted input, seconds (NOLLY_MAX_DURATION_SECONDS_<TYPE>)
    max_duration_seconds: Mapping[str, float]
    # Days after completion a job keeps its Dagster partition (NOLLY_PARTITION_RETENTION_DAYS).
    partition_retention_days: int = DEFAULT_PARTITION_RETENTION_DAYS
    # "user": a job may reuse the outputs of the same user's identical done job; "global":
    # anyone's; "off": every job is processed (NOLLY_REUSE_SCOPE).
    reuse_scope: str = "user"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        home = Path(env.get("DAGSTER_HOME") or dagster_home())
        storage = (_env("NOLLY_STORAGE", env) or "local").lower()
        if storage not in ("local", "s3"):
            raise ValueError(f"NOLLY_STORAGE must be 'local' or 's3', got {storage!r}")
        public = _env("NOLLY_PUBLIC_BASE_URL", env)
        url_mode = (_env("NOLLY_OUTPUT_URL_MODE", env) or "public").lower()
        if url_mode not in ("public", "signed"):
            raise ValueError(f"NOLLY_OUTPUT_URL_MODE must be 'public' or 'signed', got {url_mode!r}")
        signed_seconds = int(_env("NOLLY_SIGNED_URL_SECONDS", env) or MAX_SIGNED_URL_SECONDS)
        if not 1 <= signed_seconds <= MAX_SIGNED_URL_SECONDS:
            raise ValueError("NOLLY_SIGNED_URL_SECONDS must be between 1 and 604800 (S3's limit)")
        replicate_enabled = _env("REPLICATE_API_TOKEN", env) is not None
        batch_size = int(_env("NOLLY_SENSOR_BATCH_SIZE", env) or 200)
        backends: dict[str, str] = {}
        models: dict[str, tuple[str | None, str | None]] = {}
        durations: dict[str, float] = {}
        for job_type in JOB_TYPES.values():
            suffix = job_type.env_suffix
            models[job_type.name] = (
                _env(f"NOLLY_REPLICATE_MODEL_{suffix}", env),
                _env(f"NOLLY_REPLICATE_INPUT_{suffix}", env),
            )
            backends[job_type.name] = _backend(job_type, env, replicate_enabled, models[job_type.name][0])
            durations[job_type.name] = _positive(
                f"NOLLY_MAX_DURATION_SECONDS_{suffix}", env,
                DEFAULT_MAX_DURATION_BY_TYPE.get(job_type.name, DEFAULT_MAX_DURATION_SECONDS),
            )
        reuse_scope = (_env("NOLLY_REUSE_SCOPE", env) or "user").lower()
        if reuse_scope not in REUSE_SCOPES:
            raise ValueError(f"NOLLY_REUSE_SCOPE must be one of {', '.join(REUSE_SCOPES)}, got {reuse_scope!r}")
        return cls(
            database_url=_env("NOLLY_DATABASE_URL", env) or f"sqlite:///{home / 'nolly.db'}",
            storage=storage,  # type: ignore[arg-type]
            local_storage_dir=Path(_env("NOLLY_LOCAL_STORAGE_DIR", env) or home / "storage"),
            s3_endpoint_url=_env("NOLLY_S3_ENDPOINT_URL", env),
            aws_region=_env("AWS_REGION", env) or _env("AWS_DEFAULT_REGION", env),
            public_base_url=public.rstrip("/") if public else None,
            output_url_mode=url_mode,  # type: ignore[arg-type]
            signed_url_seconds=signed_seconds,
            replicate_enabled=replicate_enabled,
            replicate_base_url=_env("REPLICATE_BASE_URL", env),
            replicate_timeout_seconds=float(_env("NOLLY_REPLICATE_TIMEOUT_SECONDS", env) or 1800),
            replicate_poll_seconds=float(_env("NOLLY_REPLICATE_POLL_SECONDS", env) or 2),
            backends=backends,
            replicate_models=models,
            models_dir=Path(_env("NOLLY_MODELS_DIR", env) or Path.home() / ".cache" / "nolly-pipeline" / "models"),
            sensor_interval_seconds=int(_env("NOLLY_SENSOR_INTERVAL_SECONDS", env) or 60),
            heartbeat_seconds=float(_env("NOLLY_HEARTBEAT_SECONDS", env) or DEFAULT_HEARTBEAT_SECONDS),
            heartbeat_timeout_seconds=float(_env("NOLLY_HEARTBEAT_TIMEOUT_SECONDS", env) or DEFAULT_HEARTBEAT_TIMEOUT_SECONDS),
            reconciler_interval_seconds=int(_env("NOLLY_RECONCILER_INTERVAL_SECONDS", env) or 30),
            dispatch_grace_seconds=float(_env("NOLLY_DISPATCH_GRACE_SECONDS", env)
                                         or max(DEFAULT_DISPATCH_GRACE_SECONDS, DISPATCH_GRACE_SECONDS_PER_RUN * batch_size)),
            sensor_batch_size=batch_size,
            intermediate_bucket=_env("NOLLY_INTERMEDIATE_BUCKET", env) or DEFAULT_INTERMEDIATE_BUCKET,
            intermediate_prefix=(_env("NOLLY_INTERMEDIATE_PREFIX", env) or "dagster-io").strip("/"),
            work_dir=Path(_env("NOLLY_WORK_DIR", env) or home / "work"),
            allowed_input_hosts=_host_list(_env("NOLLY_ALLOWED_INPUT_HOSTS", env)),
            max_input_bytes=int(_positive("NOLLY_MAX_INPUT_BYTES", env, DEFAULT_MAX_INPUT_BYTES)),
            max_duration_seconds=durations,
            partition_retention_days=int(
                _positive("NOLLY_PARTITION_RETENTION_DAYS", env, DEFAULT_PARTITION_RETENTION_DAYS)
            ),
            reuse_scope=reuse_scope,
        )

    def backend_summary(self) -> dict[str, str]:
        """Which backend serves each type, for the start-up log: ``local`` or ``replicate (model)``."""
        summary: dict[str, str] = {}
        for name, backend in self.backends.items():
            if backend == "replicate":
                default = JOB_TYPES[name].replicate_default
                ref = self.replicate_models[name][0] or (default.ref if default else None)
                backend = f"replicate ({ref})"
            summary[name] = backend
        return summary

    @property
    def buckets(self) -> tuple[str, ...]:
        """Every bucket the pipeline reads or writes; created when missing on local or test storage."""
        return (*SEED_BUCKETS, self.intermediate_bucket)
