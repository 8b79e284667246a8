"""The Replicate model versions the job registry pins, as predictions name them."""

from __future__ import annotations

from nolly_pipeline.job_types import JOB_TYPES


def _version(job_type: str) -> str:
    model = JOB_TYPES[job_type].replicate_default
    assert model is not None, f"{job_type} has no Replicate model"
    return model.ref.split(":", 1)[1]


ROTO_VERSION = _version("roto")
AUDIO_VERSION = _version("audio-clean")
