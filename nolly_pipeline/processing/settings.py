"""The editor-facing settings of each local job type, as strict pydantic models.

Apart from the processing code so that validating a ``jobs`` row (the dispatch sensor does
it for every new row, whatever the backend) needs only pydantic, not OpenCV or PyAV.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Preset = Literal["warm", "cool", "teal-orange", "noir", "bleach-bypass"]
X264Preset = Literal[
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"
]


class ColorGradeSettings(BaseModel):
    """Editor-facing controls. Neutral defaults leave the picture unchanged.

    ``contrast`` and ``saturation`` are multipliers (1 = unchanged, 0 = flat / grey);
    ``temperature`` (+ warmer / - cooler) and ``tint`` (+ magenta / - green) run -1..1.
    """

    model_config = ConfigDict(extra="forbid")

    lut_url: str | None = None
    preset: Preset | None = None
    exposure: float = Field(0.0, ge=-3.0, le=3.0, description="stops")
    contrast: float = Field(1.0, ge=0.0, le=2.0)
    saturation: float = Field(1.0, ge=0.0, le=2.0)
    temperature: float = Field(0.0, ge=-1.0, le=1.0)
    tint: float = Field(0.0, ge=-1.0, le=1.0)
    intensity: float = Field(1.0, ge=0.0, le=1.0)
    crf: int = Field(18, ge=0, le=51)
    x264_preset: X264Preset = "veryfast"

    @model_validator(mode="after")
    def _one_look(self) -> ColorGradeSettings:
        # Stacking a creative LUT on a preset is almost never intended and hard to predict.
        if self.lut_url and self.preset:
            raise ValueError("set either lut_url or preset, not both")
        return self


class RotoSettings(BaseModel):
    """Editor-facing settings for a roto job."""

    model_config = ConfigDict(extra="forbid")

    # "prores" adds a ProRes 4444 .mov with alpha for finishing; WebM is always produced.
    format: Literal["webm", "prores"] = "webm"
    # 0 = raw per-frame matte; 1 = the matte never changes where the picture does not.
    # Smoothing only acts where the picture is still, so moving people are tracked at once.
    smoothing: float = Field(default=0.6, ge=0.0, le=1.0)
    # Snap the upsampled matte to picture edges (hair, shoulders); about 25 ms per 1080p frame.
    refine_edges: bool = False
    description: str | None = None  # free text the seed frontend sends; not used by processing


class AudioCleanSettings(BaseModel):
    """Editor-facing controls; defaults suit dialogue for online delivery (-16 LUFS)."""

    model_config = ConfigDict(extra="forbid")

    # dfn3 cleans hardest of the denoisers that keep dialogue intelligible under other
    # voices; nsnet2 is gentler; rnnoise cleans steady noise hard but gates background
    # talkers together with the dialogue (docs/benchmarks.md).
    denoise: Literal["dfn3", "nsnet2", "rnnoise", "spectral", "off"] = "dfn3"
    # Scales the denoiser's attenuation in dB: lower it when the result sounds processed.
    strength: float = Field(1.0, ge=0.0, le=1.0)
    loudness_lufs: float = Field(-16.0, ge=-40.0, le=-5.0)
    true_peak_db: float = Field(-1.5, ge=-9.0, le=0.0)
    highpass_hz: float = Field(80.0, ge=0.0, le=1000.0)
