"""Pick the predictor for a job type from configuration.

The backend per type is decided in :mod:`nolly_pipeline.config` (which refuses a Replicate
backend with no model when the code location loads). Where the chosen backend still cannot
serve a type (e.g. no token), an :class:`UnavailablePredictor` makes the job fail with that
reason, never with the original file handed back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from nolly_pipeline.job_types import JOB_TYPES, JobType
from nolly_pipeline.predictors import local
from nolly_pipeline.predictors.base import Predictor, UnavailablePredictor
from nolly_pipeline.predictors.replicate_model import ReplicateModel

LocalFactory = Callable[[Path], Predictor]

# job type -> factory of its local predictor (given the models directory).
LOCAL_PREDICTORS: dict[str, LocalFactory] = {
    "roto": local.roto_predictor,
    "color-grade": local.color_grade_predictor,
    "audio-clean": local.audio_clean_predictor,
}


@dataclass(frozen=True)
class PredictorConfig:
    backends: Mapping[str, str]
    replicate_models: Mapping[str, tuple[str | None, str | None]]
    replicate_api_token: str | None
    replicate_base_url: str | None
    replicate_timeout_seconds: float
    replicate_poll_seconds: float
    models_dir: Path


def build_predictor(job_type_name: str, config: PredictorConfig) -> Predictor:
    job_type = JOB_TYPES.get(job_type_name)
    if job_type is None:
        return UnavailablePredictor(job_type_name, f"unknown job type '{job_type_name}'")
    backend = config.backends.get(job_type.name, "local")
    if backend == "replicate":
        return _replicate_predictor(job_type, config)
    factory = LOCAL_PREDICTORS.get(job_type.name)
    if factory is None:
        return UnavailablePredictor(
            job_type.name, "no local backend for this type yet; set REPLICATE_API_TOKEN to use Replicate"
        )
    return factory(config.models_dir)


def _replicate_predictor(job_type: JobType, config: PredictorConfig) -> Predictor:
    if not config.replicate_api_token:
        return UnavailablePredictor(job_type.name, "REPLICATE_API_TOKEN is not set")
    ref, mapping_json = config.replicate_models.get(job_type.name, (None, None))
    if ref:
        model = ReplicateModel.from_env(ref, mapping_json, job_type.replicate_default)
    elif job_type.replicate_default is not None:
        model = job_type.replicate_default
    else:
        return UnavailablePredictor(
            job_type.name, f"no Replicate model configured; set NOLLY_REPLICATE_MODEL_{job_type.env_suffix}"
        )
    # Imported here, not at the top: every run worker imports this module with the code
    # location, and only types configured for Replicate need its client (with httpx and numpy).
    import httpx
    import replicate

    from nolly_pipeline.predictors.replicate_backend import ReplicatePredictor
    from nolly_pipeline.storage.tls import tls_context

    client = replicate.Client(
        api_token=config.replicate_api_token,
        base_url=config.replicate_base_url,
        transport=httpx.HTTPTransport(verify=tls_context()),
    )
    return ReplicatePredictor(
        client=client,
        model=model,
        timeout_seconds=config.replicate_timeout_seconds,
        poll_seconds=config.replicate_poll_seconds,
    )
