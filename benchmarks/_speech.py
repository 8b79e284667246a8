"""espeak-ng speech for the audio benchmarks, as long as a benchmark needs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from nolly_pipeline_tests.processing.reference import SPEECH_TEXT, espeak_speech

_TEXT_SECONDS = 12  # espeak-ng reads SPEECH_TEXT in about this long


def looped_speech(tmp: Path, seconds: int) -> np.ndarray:
    """``seconds`` of mono 48 kHz speech: the test text read over and over, wrapped to length."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SystemExit("espeak-ng is needed for the audio benchmarks (make bench installs it)")
    text = " ".join([SPEECH_TEXT] * (seconds // _TEXT_SECONDS))
    return np.resize(espeak_speech(espeak, tmp / "espeak.wav", text), seconds * 48_000)
