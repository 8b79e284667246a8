import numpy as np
import pyloudnorm
import pytest
from scipy.signal import resample_poly

from nolly_pipeline.processing.loudness import LoudnessMeter, TruePeakLimiter, TruePeakMeter, soft_clip


def _signal(rate):
    """Stereo tone bursts with noise and a clap: peaky, with pauses for the gates."""
    t = np.arange(5 * rate) / rate
    voice = (np.sin(2 * np.pi * 1.3 * t) > 0.2) * 0.2 * np.sin(2 * np.pi * 180 * t)
    voice[rate : rate + 200] += 0.9
    return np.stack([voice, 0.6 * voice]) + 0.01 * np.random.default_rng(1).standard_normal((2, len(t)))


def _reference_true_peak_db(x):
    return 20 * np.log10(np.abs(resample_poly(x, 4, 1, axis=1)).max())


def _in_blocks(x, size=7777):
    return [x[:, s : s + size] for s in range(0, x.shape[1], size)]


@pytest.mark.parametrize("rate", [44_100, 48_000])
def test_meters_match_references_when_streamed(rate):
    x = _signal(rate)
    loudness, peak = LoudnessMeter(rate, 2), TruePeakMeter(2)
    for block in _in_blocks(x):
        loudness.update(block)
        peak.update(block)
    assert loudness.integrated() == pytest.approx(pyloudnorm.Meter(rate).integrated_loudness(x.T), abs=0.15)
    assert peak.peak_db() == pytest.approx(_reference_true_peak_db(x), abs=0.01)


def test_silence_reads_as_minus_70():
    meter = LoudnessMeter(48_000, 1)
    meter.update(np.zeros((1, 48_000)))
    assert meter.integrated() == -70.0


def test_limiter_holds_ceiling_and_leaves_quiet_parts_alone():
    rate = 48_000
    x = _signal(rate) * 2.0
    limiter = TruePeakLimiter(rate, 2, -3.0)
    out = np.concatenate([limiter(b) for b in _in_blocks(x)] + [limiter(np.zeros((2, limiter.latency)))], axis=1)
    out = out[:, limiter.latency :]
    assert out.shape == x.shape
    assert _reference_true_peak_db(out) <= -3.0 + 1e-3
    quiet = slice(int(2.8 * rate), int(3.0 * rate))  # a pause: only noise, far from any peak
    np.testing.assert_allclose(out[:, quiet], x[:, quiet])


def test_soft_clip_is_smooth_below_the_ceiling_and_leaves_the_quiet_alone():
    ceiling_db = -3.0
    ceiling, knee = 10 ** (ceiling_db / 20), 10 ** ((ceiling_db - 6) / 20)
    x = np.linspace(-4.0, 4.0, 80_001)[None, :]
    y = soft_clip(x, ceiling_db)
    quiet = np.abs(x) <= knee
    assert np.array_equal(y[quiet], x[quiet])
    assert np.abs(y).max() < ceiling
    assert np.all(np.diff(y[0]) >= 0), "monotonic: no foldback"
    slope = np.diff(y[0]) / np.diff(x[0])
    assert slope.max() <= 1.0 + 1e-9 and np.abs(np.diff(slope)).max() < 1e-3, "no kink at the knee"
    assert np.array_equal(soft_clip(-x, ceiling_db), -y)
