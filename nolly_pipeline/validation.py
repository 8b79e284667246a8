"""Check a ``jobs`` row before any work is spent on it.

The sensor runs this on every new row so a malformed one fails at once with a readable
message (and the tick goes on); the first op runs it again because backfills and manual
launches do not pass through the sensor.

Settings are checked against the job type's settings model (the local processors' pydantic
models, which forbid unknown fields) whatever the backend: a typo such as ``smothing`` must
fail the same way whether the type runs locally or on Replicate. One key is the pipeline's,
not the processor's: ``"reuse": false`` asks for processing even when an identical job
already finished (see :mod:`nolly_pipeline.reuse`); it is taken out before the check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Collection

from pydantic import BaseModel

from nolly_pipeline.db.job_rows import JobRow
from nolly_pipeline.errors import InputError
from nolly_pipeline.job_types import JOB_TYPES, JobType
from nolly_pipeline.predictors.base import Predictor
from nolly_pipeline.processing.settings import AudioCleanSettings, ColorGradeSettings, RotoSettings
from nolly_pipeline.processing.validation import parse_settings
from nolly_pipeline.storage.urls import InputSource, resolve_source

SETTINGS_MODELS: dict[str, type[BaseModel]] = {
    "roto": RotoSettings,
    "color-grade": ColorGradeSettings,
    "audio-clean": AudioCleanSettings,
}


@dataclass(frozen=True)
class JobSpec:
    job_type: JobType
    source: InputSource
    # The processor's settings (without ``reuse``).
    settings: dict[str, Any]
    # False when the job asked to be processed even if an identical one already finished.
    reuse: bool = True


def job_type_of(row: JobRow) -> JobType:
    job_type = JOB_TYPES.get(row.type) if isinstance(row.type, str) else None
    if job_type is None:
        known = ", ".join(sorted(JOB_TYPES))
        raise InputError(f"unknown job type '{row.type}'; expected one of: {known}")
    return job_type


def settings_model(job_type: JobType) -> type[BaseModel]:
    return SETTINGS_MODELS[job_type.name]


def validate_row(
    row: JobRow, public_base_url: str | None, predictor: Predictor, allowed_hosts: Collection[str]
) -> JobSpec:
    """Return what the job asks for, or raise a :class:`NollyError` saying what is wrong.

    ``allowed_hosts`` are the web hosts an http(s) ``file_url`` may name (none: storage only).
    """
    job_type = job_type_of(row)
    data = row.input_data
    if not isinstance(data, dict):
        raise InputError("input_data must be a JSON object with file_url and settings")
    source = resolve_source(data.get("file_url"), public_base_url, row.user_id, allowed_hosts)
    settings = data.get("settings")
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise InputError(f"input_data.settings must be a JSON object, got {type(settings).__name__}")
    settings = dict(settings)
    reuse = settings.pop("reuse", True)
    if not isinstance(reuse, bool):
        raise InputError(f"settings.reuse must be true or false, got {json.dumps(reuse)}")
    predictor.validate(settings)
    parse_settings(settings_model(job_type), settings)
    return JobSpec(job_type=job_type, source=source, settings=settings, reuse=reuse)
