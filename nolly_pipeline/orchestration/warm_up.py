"""Imports what runs of this configuration use, for the run worker zygote to preload.

The code location imports heavy clients lazily, so a worker pays only for what its run uses
(see ``nolly_pipeline_tests/test_imports.py``). A zygote (:mod:`.launcher`) goes the other way:
it imports them once, before forking, so that no run pays for them. Named in the launcher's
``preload_modules`` in ``dagster.yaml``; importing this module does the work.
"""

from __future__ import annotations

import importlib
from typing import cast

from nolly_pipeline.config import Settings

# Every run: download probes its input (PyAV), publish checks it and renders a preview
# (drawn with OpenCV, waveforms of audio too).
EVERY_RUN = (
    "numpy",
    "av",
    "cv2",
    "nolly_pipeline.inputs",
    "nolly_pipeline.processing.media",
    "nolly_pipeline.processing.checks",
    "nolly_pipeline.processing.previews",
    "nolly_pipeline.processing.loudness",
)
# The jobs table on PostgreSQL: SQLAlchemy imports the driver when the run builds its engine.
DATABASE_DRIVER = ("psycopg2.extras",)
S3_CLIENT = ("boto3", "botocore.config", "botocore.exceptions", "boto3.s3.transfer")
# httpx imports its transport (httpcore, h11) when the first client is built.
REPLICATE_CLIENT = ("replicate", "nolly_pipeline.predictors.replicate_backend", "httpcore", "h11")
# Local processing per job type.
LOCAL = {
    "roto": ("nolly_pipeline.processing.roto",),
    "color-grade": ("nolly_pipeline.processing.color_grade",),
    "audio-clean": ("onnxruntime", "nolly_pipeline.processing.audio_clean"),
}


def run_modules(settings: Settings) -> list[str]:
    """The modules a run of ``settings`` imports besides the code location, in import order."""
    modules = list(EVERY_RUN)
    if settings.database_url.startswith("postgresql"):
        modules += DATABASE_DRIVER
    if settings.storage == "s3":
        modules += S3_CLIENT
    if "replicate" in settings.backends.values():
        modules += REPLICATE_CLIENT
    for job_type, backend in settings.backends.items():
        if backend == "local":
            modules += [m for m in LOCAL.get(job_type, ()) if m not in modules]
    return modules


def warm_clients(settings: Settings) -> None:
    """Build, once, what each run would load or build on first use: the TLS context (CA
    bundle), the S3 client and the previews' font tables. No connection is opened and no
    thread started, so nothing is shared with a forked worker but loaded data.

    With keys in the environment, the S3 client is the very one the runs' storage resource
    asks for: the resource is built and initialised as a run does it, and
    :func:`.resources.s3_store` keeps one client per configuration per process (~25 ms each
    run built its own). Without keys that client would look credentials up (instance
    metadata, a network call), which a zygote must not do: a client with dummy keys then
    loads only botocore's service model, endpoint rules and partitions."""
    from nolly_pipeline.definitions import build_resources
    from nolly_pipeline.orchestration.resources import ObjectStorageResource
    from nolly_pipeline.processing.previews import load_fonts
    from nolly_pipeline.storage.tls import tls_context

    tls_context()
    load_fonts()
    if settings.storage != "s3":
        return
    storage = cast(ObjectStorageResource, build_resources(settings)["storage"])
    if storage.access_key_id and storage.secret_access_key:  # set in the environment
        storage.process_config_and_initialize().store()
    else:  # not through s3_store: a client no run asks for stays out of the runs' cache
        import boto3

        boto3.client("s3", region_name="us-east-1", aws_access_key_id="warm-up", aws_secret_access_key="warm-up")


_settings = Settings.from_env()
for _name in run_modules(_settings):
    importlib.import_module(_name)
warm_clients(_settings)
