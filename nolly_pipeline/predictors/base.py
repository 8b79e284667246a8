"""What a processing backend looks like to the pipeline.

A predictor turns one local input file into one or more local output files. It does not know
about Dagster, storage or the jobs table: the ops hand it a :class:`PredictionRequest` and
publish what it returns. Local backends wrap :mod:`nolly_pipeline.processing`; the Replicate
backend calls the remote API. A new job type is one predictor plus one registry entry.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from nolly_pipeline.processing.base import ProcessingResult, ProgressFn


@dataclass(frozen=True)
class PredictionRequest:
    job_id: uuid.UUID
    job_type: str
    source: Path
    # An HTTP(S) URL a remote backend may fetch the input from directly, or None (then the
    # backend must upload ``source`` itself).
    source_url: str | None
    settings: Mapping[str, Any]
    work_dir: Path
    # Called with (done, total) units; also serves as the run's heartbeat.
    progress: ProgressFn
    # Fetches another object named by URL in the settings (e.g. ``lut_url``) to a local path.
    fetch_asset: Callable[[str], Path]


class Predictor(Protocol):
    """A processing backend for one job type."""

    backend: str

    @property
    def version(self) -> str | None:
        """What produces the outputs, as a string that changes whenever they could change for
        the same input and settings (part of the result-reuse key); None when that cannot be
        known, and then results are never reused."""

    def validate(self, settings: Mapping[str, Any]) -> None:
        """Raise :class:`~nolly_pipeline.errors.InputError` naming the field for bad settings."""

    def predict(self, request: PredictionRequest) -> ProcessingResult: ...


@dataclass(frozen=True)
class UnavailablePredictor:
    """Stands in where no backend is configured, so the job fails saying exactly that."""

    job_type: str
    reason: str
    backend: str = "none"
    version: None = None

    def validate(self, settings: Mapping[str, Any]) -> None:
        from nolly_pipeline.errors import PermanentError

        raise PermanentError(f"no processing backend configured for {self.job_type}: {self.reason}")

    def predict(self, request: PredictionRequest) -> ProcessingResult:
        self.validate(request.settings)
        raise AssertionError("unreachable")
