"""The pass-2 plan of audio clean-up: gain, soft clipper and true-peak limiter on the scratch.

The loudness and true-peak outcomes of whole files are tested through ``audio_clean`` in
``test_audio_clean.py``; here the per-window ceiling lossy re-encodes rely on, the gain
search's dry runs split in two, and the limiter reading pass 1's peaks instead of
oversampling.
"""

import tempfile

import numpy as np
import pytest

from nolly_pipeline.processing.audio_stream import scratch_blocks
from nolly_pipeline.processing import gain_plan
from nolly_pipeline.processing.gain_plan import dry_run_loudness, limited
from nolly_pipeline.processing.loudness import LoudnessMeter, TruePeakMeter
from nolly_pipeline.processing.peak_track import PeakTrack


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


def _bursts(rate: int, channels: int, seconds: float = 20.3) -> np.ndarray:
    """A quiet bed with bursts up to 30 dB over it, as float32 (what the scratch holds)."""
    rng = np.random.default_rng(7)
    n = int(seconds * rate)
    signal = 0.01 * rng.standard_normal((channels, n))
    for at in rng.integers(0, n - rate // 10, 40):
        signal[:, at : at + rate // 20] *= 30 * rng.random()
    return signal.astype("<f4")


@pytest.mark.parametrize("lowered", [False, True])
def test_the_limiter_on_stored_peaks_keeps_the_ceiling_and_the_loudness(lowered):
    """Pass 1's peaks (rounded up, at most 0.01 dB over) in place of the oversampling: the
    output's true peak is no higher (the limiter's gain moving within an interpolation span
    leaves both a few thousandths of a dB over the ceiling), the output differs by at most
    0.01 dB of gain, and a dry run (in two halves, at once) reads the same loudness within
    0.005 LU."""
    rate, channels = 48_000, 2
    signal = _bursts(rate, channels)
    windows = np.zeros(int(20.3 / 0.02) + 1)
    if lowered:
        windows[np.random.default_rng(1).integers(0, len(windows), 30)] = 4.0
    ceilings = windows if lowered else None
    with tempfile.TemporaryFile() as scratch, tempfile.TemporaryFile() as file:
        scratch.write(np.ascontiguousarray(signal.T).tobytes())
        track = PeakTrack(file, channels)
        for start in range(0, signal.shape[1], 12_000):
            track.write(signal[:, start : start + 12_000])
        track.finish()
        outputs = [np.concatenate(list(limited(scratch_blocks(scratch, channels, 12_000), 12.0, -1.0, rate,
                                               channels, None, ceilings, peaks=peaks)), axis=1)
                   for peaks in (None, track)]
        loudness = [dry_run_loudness(scratch, channels, rate, 12.0, -1.0, None, ceilings, peaks)
                    for peaks in (None, track)]
    oversampled, stored = outputs
    peaks = []
    for output in outputs:
        meter = TruePeakMeter(channels)
        meter.update(output)
        peaks.append(meter.peak_db())
    assert peaks[1] <= max(peaks[0], -1.0)
    louder = np.abs(oversampled) > 1e-3
    assert np.all(np.abs(20 * np.log10(np.abs(stored[louder]) / np.abs(oversampled[louder]))) <= 0.01)
    assert loudness[1] == pytest.approx(loudness[0], abs=0.005)


@pytest.mark.parametrize("aim", [gain_plan.LOUDNESS_TOLERANCE_LU / 2, gain_plan.LOSSY_AIM_LU])
def test_the_gain_search_lands_within_its_aim_under_limiting(aim):
    """Lossy output asks for a closer aim (the codec's own shift comes on top of the miss):
    on syllables that need about 5 dB of limiting, the plan's miss is within it, and a dry
    run at the plan's gain reads it."""
    rate, channels = 48_000, 1
    t = np.arange(20 * rate) / rate
    syllables = np.maximum(np.sin(2 * np.pi * 2.5 * t), 0) ** 2 * (1 + 0.5 * np.sin(2 * np.pi * 0.3 * t))
    voice = syllables * sum(np.sin(2 * np.pi * 180 * k * t) / k for k in range(1, 12))
    noise = np.random.default_rng(3).standard_normal(len(t))
    signal = (0.1 * voice + 0.005 * noise)[None, :].astype("<f4")
    loudness, peak = LoudnessMeter(rate, channels), TruePeakMeter(channels)
    loudness.update(signal.astype(np.float64))
    peak.update(signal.astype(np.float64))
    measured = gain_plan.Measured(loudness.integrated(), peak.peak_db(), 0.0, channels)
    target = measured.loudness - 1.0 - measured.true_peak_db + 5.0  # peaks 5 dB over the ceiling unlimited
    with tempfile.TemporaryFile() as scratch:
        scratch.write(np.ascontiguousarray(signal.T).tobytes())
        plan = gain_plan.solve_gain(scratch, measured, rate, target, -1.0, None, None, aim)
        reads = dry_run_loudness(scratch, channels, rate, plan.gain_db, -1.0, plan.clip_db, None)
    assert abs(plan.miss) <= aim
    assert reads == pytest.approx(target - plan.miss, abs=1e-9)
