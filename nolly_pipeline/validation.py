"""Check a ``jobs`` row before any work is spent on it.

The sensor runs this on every new row so a malformed one fails at once with a readable
message (and the tick goes on); the first op runs it again because backfills and manual
launches do not pass through the sensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nolly_pipeline.db.jobs import JobRow
from nolly_pipeline.errors import InputError
from nolly_pipeline.job_types import JOB_TYPES, JobType
from nolly_pipeline.predictors.base import Predictor
from nolly_pipeline.storage.urls import ObjectRef, resolve_input_url


@dataclass(frozen=True)
class JobSpec:
    job_type: JobType
    source: ObjectRef
    settings: dict[str, Any]


def job_type_of(row: JobRow) -> JobType:
    job_type = JOB_TYPES.get(row.type) if isinstance(row.type, str) else None
    if job_type is None:
        known = ", ".join(sorted(JOB_TYPES))
        raise InputError(f"unknown job type '{row.type}'; expected one of: {known}")
    return job_type


def validate_row(row: JobRow, public_base_url: str | None, predictor: Predictor) -> JobSpec:
    """Return what the job asks for, or raise a :class:`NollyError` saying what is wrong."""
    job_type = job_type_of(row)
    data = row.input_data
    if not isinstance(data, dict):
        raise InputError("input_data must be a JSON object with file_url and settings")
    source = resolve_input_url(data.get("file_url"), public_base_url, row.user_id)
    settings = data.get("settings")
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise InputError(f"input_data.settings must be a JSON object, got {type(settings).__name__}")
    predictor.validate(settings)
    return JobSpec(job_type=job_type, source=source, settings=settings)
