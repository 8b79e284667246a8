"""Pass 1's record of every sample's true peak: never under the oversampler's, barely over."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest

from nolly_pipeline.processing.loudness import Oversampler, TruePeakMeter
from nolly_pipeline.processing.peak_track import PeakTrack


def _signal(channels: int = 2, n: int = 30_000) -> np.ndarray:
    rng = np.random.default_rng(3)
    signal = 0.05 * rng.standard_normal((channels, n))
    signal[:, 12_000:12_050] *= 15  # a burst whose inter-sample peaks exceed its samples
    return signal.astype("<f4")


def test_entries_are_the_oversamplers_peaks_rounded_up(tmp_path):
    signal = _signal()
    with tempfile.TemporaryFile() as file:
        track = PeakTrack(file, 2)
        for start in range(0, signal.shape[1], 7_000):
            track.write(signal[:, start : start + 7_000])
        track.finish()
        stored = track.read(0, signal.shape[1] + Oversampler.reach)
        past_the_end = track.read(signal.shape[1] + Oversampler.reach, 100)
    oversampler = Oversampler(2)
    exact = np.concatenate([oversampler(signal, 0.0), oversampler(np.zeros((2, Oversampler.reach)), 0.0)])
    assert np.all(stored >= exact)
    loud = exact > 1e-3
    assert np.max(20 * np.log10(stored[loud] / exact[loud])) <= 0.01
    assert not past_the_end.any()


def test_the_true_peak_is_the_meters(tmp_path):
    signal = _signal()
    meter = TruePeakMeter(2)
    meter.update(signal)
    with tempfile.TemporaryFile() as file:
        track = PeakTrack(file, 2)
        track.write(signal)
        assert track.finish() == pytest.approx(meter.peak_db(), abs=0.01)
        assert track.finish() >= meter.peak_db()
