"""Dagster resources: thin, configurable wrappers that hand out the plain objects.

Secrets (database URL with a password, AWS keys, the Replicate token) reach these through
``EnvVar`` so they never appear in run config, tags or the UI; see ``definitions.py``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from pathlib import Path
from typing import Optional

from dagster import ConfigurableResource

from nolly_pipeline.config import DEFAULT_HEARTBEAT_SECONDS, MAX_SIGNED_URL_SECONDS
from nolly_pipeline.db.engine import get_engine
from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline.inputs import InputLimits
from nolly_pipeline.predictors.base import Predictor
from nolly_pipeline.predictors.registry import PredictorConfig, build_predictor
from nolly_pipeline.storage.http_fetch import HttpFetcher
from nolly_pipeline.storage.objects import LocalObjectStore, ObjectStore, S3ObjectStore
from nolly_pipeline.storage.urls import ObjectRef, public_url


class ScratchResource(ConfigurableResource):
    """Local scratch space for the files a run works on; removed when the run ends.

    One folder per run *and worker process*: a duplicate worker of the same run (two daemons
    launching one queued run) is refused by the row's fencing, and its failure hook must not
    remove the files the owning worker is working on."""

    root: str

    def _path(self, run_id: str) -> Path:
        return Path(self.root) / run_id / str(os.getpid())

    def run_dir(self, run_id: str) -> Path:
        path = self._path(run_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def remove_run_dir(self, run_id: str) -> None:
        shutil.rmtree(self._path(run_id), ignore_errors=True)
        with contextlib.suppress(OSError):
            self._path(run_id).parent.rmdir()  # the run's folder, once no worker uses it


@functools.lru_cache(maxsize=4)
def s3_store(
    endpoint_url: str | None, region: str | None, access_key_id: str | None, secret_access_key: str | None
) -> S3ObjectStore:
    """One boto3 client per configuration per process: ops, the IO manager and sensors ask for
    the store many times per run, and building a client costs tens of milliseconds."""
    return S3ObjectStore.connect(endpoint_url, region, access_key_id, secret_access_key)


class JobStoreResource(ConfigurableResource):
    """The ``jobs`` and ``notifications`` tables."""

    database_url: str
    # How often a working run touches its row; see the reconciler's heartbeat timeout.
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    # Whose finished identical jobs a job may take its outputs from: user, global or off.
    reuse_scope: str = "user"

    def store(self) -> JobStore:
        return JobStore(get_engine(self.database_url))


class ObjectStorageResource(ConfigurableResource):
    """Buckets on local disk (``kind="local"``) or an S3-protocol server (``kind="s3"``)."""

    kind: str = "local"
    local_dir: str = ""
    endpoint_url: Optional[str] = None
    region: Optional[str] = None
    access_key_id: Optional[str] = None
    secret_access_key: Optional[str] = None
    public_base_url: Optional[str] = None

    def store(self) -> ObjectStore:
        if self.kind == "s3":
            return s3_store(self.endpoint_url, self.region, self.access_key_id, self.secret_access_key)
        return LocalObjectStore(Path(self.local_dir))

    # "public": the seed's behaviour (public bucket URLs); "signed": presigned, expiring URLs.
    output_url_mode: str = "public"
    signed_url_seconds: int = MAX_SIGNED_URL_SECONDS

    def url_for(self, store: ObjectStore, ref: ObjectRef) -> str:
        """The object's public URL when a public base is configured, else its native URL."""
        if self.public_base_url:
            return public_url(self.public_base_url, ref)
        return store.native_url(ref.bucket, ref.key)

    def output_url(self, store: ObjectStore, ref: ObjectRef) -> str:
        """The URL the frontend gets for an output object, per ``NOLLY_OUTPUT_URL_MODE``.

        Signed URLs expire; ``storage_path`` stays in ``output_data`` so a link can be re-signed.
        Local storage cannot sign, so it keeps its ``file://`` URL.
        """
        if self.output_url_mode == "signed":
            signed = store.presigned_url(ref.bucket, ref.key, self.signed_url_seconds)
            if signed:
                return signed
        return self.url_for(store, ref)


class InputPolicyResource(ConfigurableResource):
    """Which web hosts a job's file_url may name, and how big and long an input may be."""

    allowed_hosts: list[str]
    max_input_bytes: int
    # job type -> seconds
    max_duration_seconds: dict[str, float]

    def limits(self) -> InputLimits:
        return InputLimits(max_bytes=self.max_input_bytes, max_duration_seconds=self.max_duration_seconds)

    def fetcher(self) -> HttpFetcher:
        return HttpFetcher(self.allowed_hosts)


class PredictorsResource(ConfigurableResource):
    """Chooses and builds the processing backend for each job type."""

    backends: dict[str, str]
    replicate_models: dict[str, list[Optional[str]]]
    replicate_api_token: Optional[str] = None
    replicate_base_url: Optional[str] = None
    replicate_timeout_seconds: float = 1800.0
    replicate_poll_seconds: float = 2.0
    models_dir: str = ""

    def predictor(self, job_type: str) -> Predictor:
        config = PredictorConfig(
            backends=self.backends,
            replicate_models={k: (v[0], v[1]) for k, v in self.replicate_models.items()},
            replicate_api_token=self.replicate_api_token,
            replicate_base_url=self.replicate_base_url,
            replicate_timeout_seconds=self.replicate_timeout_seconds,
            replicate_poll_seconds=self.replicate_poll_seconds,
            models_dir=Path(self.models_dir),
        )
        return build_predictor(job_type, config)
