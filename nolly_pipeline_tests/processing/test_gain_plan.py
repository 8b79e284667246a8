"""The pass-2 plan of audio clean-up: gain, soft clipper and true-peak limiter on the scratch.

The loudness and true-peak outcomes of whole files are tested through ``audio_clean`` in
``test_audio_clean.py``; here the per-window ceiling lossy re-encodes rely on, and the gain
search's dry runs split in two.
"""

import tempfile

import numpy as np
import pytest

from nolly_pipeline.processing.audio_stream import scratch_blocks
from nolly_pipeline.processing import gain_plan
from nolly_pipeline.processing.gain_plan import dry_run_loudness, limited
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


@pytest.mark.parametrize(("rate", "channels", "clip_db", "lowered"), [
    (48_000, 1, None, False), (44_100, 2, -4.0, True), (22_050, 1, None, True)])
def test_a_dry_run_in_two_halves_reads_what_one_pass_reads(monkeypatch, rate, channels, clip_db, lowered):
    """The halves, run at once on two threads, count the same blocks through the same limiter
    state as one pass over the file: the same loudness (but for the order of a sum), under heavy limiting
    (bursts 30 dB over a quiet bed, one right at the cut), the soft clipper and a lowered ceiling."""
    rng = np.random.default_rng(7)
    seconds = 20.3
    n = int(seconds * rate)
    signal = 0.01 * rng.standard_normal((channels, n))
    for at in [*rng.integers(0, n - rate // 10, 40), n // 2 // (rate // 10) * (rate // 10) - 20]:
        signal[:, at : at + rate // 20] *= 30 * rng.random()
    windows = np.zeros(int(seconds / 0.02) + 1)
    if lowered:
        windows[rng.integers(0, len(windows), 30)] = 4.0
    with tempfile.TemporaryFile() as scratch:
        scratch.write(np.ascontiguousarray(signal.T, dtype="<f4").tobytes())
        halves = dry_run_loudness(scratch, channels, rate, 12.0, -1.0, clip_db, windows if lowered else None)
        monkeypatch.setattr(gain_plan, "_SPLIT_FROM_S", float("inf"))
        one = dry_run_loudness(scratch, channels, rate, 12.0, -1.0, clip_db, windows if lowered else None)
    assert halves == pytest.approx(one, abs=1e-9)
