"""Local backends: the pure processing functions, adapted to the predictor interface.

Heavy media libraries are imported when a job runs, not when the code location loads, so
the sensor and the UI stay light.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from pydantic import BaseModel

from nolly_pipeline.predictors.base import PredictionRequest
from nolly_pipeline.processing.base import ProcessingResult
from nolly_pipeline.processing.validation import parse_settings

Runner = Callable[[PredictionRequest, Any], ProcessingResult]


@dataclass(frozen=True)
class LocalPredictor:
    settings_model: type[BaseModel]
    runner: Runner
    # The processor's PROCESSING_VERSION: part of the result-reuse key.
    version: str
    backend: str = "local"

    def validate(self, settings: Mapping[str, Any]) -> None:
        """Nothing more: :func:`nolly_pipeline.validation.validate_row` already parses the
        settings with this same model (the job type's), for every backend."""

    def predict(self, request: PredictionRequest) -> ProcessingResult:
        settings = parse_settings(self.settings_model, dict(request.settings))
        return self.runner(request, settings)


def color_grade_predictor(models_dir: Path) -> LocalPredictor:
    from nolly_pipeline.processing.color_grade import PROCESSING_VERSION, ColorGradeSettings, color_grade

    def run(request: PredictionRequest, settings: ColorGradeSettings) -> ProcessingResult:
        lut_path = request.fetch_asset(settings.lut_url) if settings.lut_url else None
        return color_grade(request.source, request.work_dir, settings, lut_path=lut_path, progress=request.progress)

    return LocalPredictor(ColorGradeSettings, run, PROCESSING_VERSION)


def audio_clean_predictor(models_dir: Path) -> LocalPredictor:
    from nolly_pipeline.processing.audio_clean import PROCESSING_VERSION, AudioCleanSettings, audio_clean

    def run(request: PredictionRequest, settings: AudioCleanSettings) -> ProcessingResult:
        return audio_clean(request.source, request.work_dir, settings, progress=request.progress,
                           models_dir=models_dir)

    return LocalPredictor(AudioCleanSettings, run, PROCESSING_VERSION)


def roto_predictor(models_dir: Path) -> LocalPredictor:
    from nolly_pipeline.processing.models import selfie_model_path
    from nolly_pipeline.processing.roto import PROCESSING_VERSION, RotoSettings, roto

    def run(request: PredictionRequest, settings: RotoSettings) -> ProcessingResult:
        return roto(
            request.source,
            request.work_dir,
            settings,
            model_path=selfie_model_path(models_dir),
            landscape_model_path=selfie_model_path(models_dir, landscape=True),
            progress=request.progress,
        )

    return LocalPredictor(RotoSettings, run, PROCESSING_VERSION)
