"""The pass-2 plan of audio clean-up: gain, soft clipper and true-peak limiter on the scratch.

The loudness and true-peak outcomes of whole files are tested through ``audio_clean`` in
``test_audio_clean.py``; here the per-window ceiling lossy re-encodes rely on.
"""

import tempfile

import numpy as np
import pytest

from nolly_pipeline.processing.audio_stream import scratch_blocks
from nolly_pipeline.processing.gain_plan import limited
from nolly_pipeline.processing.loudness import TruePeakMeter


@pytest.mark.parametrize("click", [5 * 960, 5 * 960 + 950, 5 * 960 + 959, 47_999])
def test_lowered_ceiling_applies_to_the_window_it_names(click):
    """The per-window ceiling of lossy re-encodes covers its window edge to edge, file end too."""
    rate, window = 48_000, 960  # _CEILING_WINDOW_S at 48 kHz
    signal = 0.01 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)[None, :]
    signal[0, click] = 0.99
    lowered = np.zeros(rate // window)
    lowered[click // window] = 6.0
    with tempfile.TemporaryFile() as scratch:
        scratch.write(np.ascontiguousarray(signal.T, dtype="<f4").tobytes())
        blocks = scratch_blocks(scratch, 1, 12_000)
        out = np.concatenate(list(limited(blocks, 0.0, -1.0, rate, 1, None, lowered)), axis=1)
    meter = TruePeakMeter(1)
    meter.update(out)
    assert out.shape == signal.shape
    assert meter.peak_db() <= -7.0 + 0.01
