import numpy as np
import pyloudnorm
import pytest

from nolly_pipeline.processing.loudness import (
    LoudnessMeter,
    Oversampler,
    TruePeakLimiter,
    TruePeakMeter,
    WindowPeaks,
    soft_clip,
)
from nolly_pipeline_tests.processing.reference import true_peak_db


def _signal(rate):
    """Stereo tone bursts with noise and a clap: peaky, with pauses for the gates."""
    t = np.arange(5 * rate) / rate
    voice = (np.sin(2 * np.pi * 1.3 * t) > 0.2) * 0.2 * np.sin(2 * np.pi * 180 * t)
    voice[rate : rate + 200] += 0.9
    return np.stack([voice, 0.6 * voice]) + 0.01 * np.random.default_rng(1).standard_normal((2, len(t)))


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
    assert peak.peak_db() == pytest.approx(true_peak_db(x), abs=0.01)


def test_silence_reads_as_minus_70():
    meter = LoudnessMeter(48_000, 1)
    meter.update(np.zeros((1, 48_000)))
    assert meter.integrated() == -70.0


def test_oversampler_reads_the_same_peaks_on_every_point_or_on_the_few_that_can_reach_the_threshold():
    """Under ``_DENSE_SHARE`` of a block's points can pass, only those are interpolated (one
    span each); past it, every point, in one polyphase filter. The two agree, and the
    filter's peak is the reference true peak."""
    x = _signal(48_000)
    dense, sparse = Oversampler(2), Oversampler(2)
    peaks = []
    for block in _in_blocks(x):
        every, few = dense(block, 0.0), sparse(block, 0.5)  # the clap and little else
        assert np.count_nonzero(few) < 0.05 * block.shape[1]
        np.testing.assert_allclose(few[few > 0], every[few > 0], rtol=1e-12)
        assert np.all(every[few == 0] <= 0.5)
        peaks.append(every)
    assert np.count_nonzero(np.concatenate(peaks) > 0.5) > 0
    assert 20 * np.log10(np.concatenate(peaks).max()) == pytest.approx(true_peak_db(x), abs=0.01)


def test_limiter_holds_ceiling_and_leaves_quiet_parts_alone():
    rate = 48_000
    x = _signal(rate) * 2.0
    limiter = TruePeakLimiter(rate, 2, -3.0)
    out = np.concatenate([limiter(b) for b in _in_blocks(x)] + [limiter(np.zeros((2, limiter.latency)))], axis=1)
    out = out[:, limiter.latency :]
    assert out.shape == x.shape
    assert true_peak_db(out) <= -3.0 + 1e-3
    quiet = slice(int(2.8 * rate), int(3.0 * rate))  # a pause: only noise, far from any peak
    np.testing.assert_allclose(out[:, quiet], x[:, quiet])


def test_limiter_lowers_its_ceiling_only_where_asked():
    rate = 48_000
    x = _signal(rate) * 2.0
    lowered = np.zeros(x.shape[1])
    second = slice(int(3.0 * rate), int(4.0 * rate))
    lowered[second] = 4.0  # -3 dBTP everywhere, -7 dBTP in the 4th second
    limiter = TruePeakLimiter(rate, 2, -3.0)
    parts = [limiter(x[:, s : s + 7777], lowered[s : s + 7777]) for s in range(0, x.shape[1], 7777)]
    out = np.concatenate(parts + [limiter(np.zeros((2, limiter.latency)))], axis=1)[:, limiter.latency :]
    assert true_peak_db(out) <= -3.0 + 1e-3
    inner = slice(second.start + 2400, second.stop - 2400)  # clear of the edges' ramps
    assert true_peak_db(out[:, inner]) <= -7.0 + 0.05
    assert true_peak_db(out[:, : int(2.5 * rate)]) > -3.5, "the rest keeps -3 dBTP"


def test_window_peaks_find_the_windows_over_the_threshold():
    rate, window = 48_000, 960
    x = _signal(rate)
    meter = WindowPeaks(2, window, -6.0)
    for block in _in_blocks(x):
        meter.update(block)
    peaks = meter.finish()
    assert len(peaks) == x.shape[1] // window + 1  # and the ringing past the last sample
    over = np.flatnonzero(peaks > 10 ** (-6 / 20))
    assert len(over) and np.all(over * window <= 1.01 * rate) and np.all((over + 1) * window >= rate)
    clap = over[np.argmax(peaks[over])]
    reference = true_peak_db(x[:, max(clap - 1, 0) * window : (clap + 2) * window])
    assert 20 * np.log10(peaks[clap]) == pytest.approx(reference, abs=0.1)
    assert np.all((peaks == 0) | (peaks > 10 ** (-6 / 20))), "under the threshold reads 0"
    assert meter.peak_db() == pytest.approx(true_peak_db(x), abs=0.01)


def test_window_peaks_skip_a_lead_that_still_counts_for_the_stream_peak():
    """Samples before ``skip`` (an encoder's priming) belong to no window; the clap at 1 s
    lies in them, so no window reaches the threshold, but the stream's peak is the clap's."""
    rate, window = 48_000, 960
    x = _signal(rate)
    lead = int(1.5 * rate)
    meter = WindowPeaks(2, window, -6.0, skip=lead)
    for block in _in_blocks(x):
        meter.update(block)
    peaks = meter.finish()
    assert len(peaks) == (x.shape[1] - lead) // window + 1
    assert not np.any(peaks > 10 ** (-6 / 20))
    assert meter.peak_db() == pytest.approx(true_peak_db(x), abs=0.01)
    alone = WindowPeaks(2, window, -20.0)
    for block in _in_blocks(x[:, lead:]):
        alone.update(block)
    shifted = WindowPeaks(2, window, -20.0, skip=lead)
    for block in _in_blocks(x):
        shifted.update(block)
    np.testing.assert_allclose(shifted.finish()[1:], alone.finish()[1:], rtol=1e-9)


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
