"""Audio as audio clean-up streams it: re-chunked float blocks, rate conversion, the scratch.

Whole files through ``audio_clean`` are tested in ``test_audio_clean.py``; here the block
mechanics both passes rely on: nothing is lost or reordered at block edges.
"""

import tempfile

import numpy as np
import pytest

from nolly_pipeline.processing.audio_stream import (
    RateConverter,
    float_blocks,
    float_frame,
    scratch_blocks,
    scratch_samples,
)


def _signal(channels: int, samples: int) -> np.ndarray:
    return np.random.default_rng(3).uniform(-0.5, 0.5, (channels, samples))


def test_scratch_round_trips_interleaved_float32_in_blocks():
    """Pass 1 writes interleaved float32; pass 2 reads it back per channel, any block size."""
    signal = _signal(2, 10_007).astype(np.float32).astype(np.float64)
    with tempfile.TemporaryFile() as scratch:
        scratch.write(np.ascontiguousarray(signal.T, dtype="<f4").tobytes())
        assert scratch_samples(scratch, 2) == 10_007
        blocks = list(scratch_blocks(scratch, 2, 3_000))
        assert [b.shape for b in blocks] == [(2, 3_000)] * 3 + [(2, 1_007)]
        np.testing.assert_array_equal(np.concatenate(blocks, axis=1), signal)
        # A second read (every dry run of the gain search) starts from the top again.
        np.testing.assert_array_equal(np.concatenate(list(scratch_blocks(scratch, 2, 4_096)), axis=1), signal)


def test_float_blocks_rechunk_frames_without_losing_samples():
    signal = _signal(1, 5_000).astype(np.float32)
    frames = [float_frame(signal[:, start : start + 1_024], "mono", 48_000, start)
              for start in range(0, 5_000, 1_024)]
    blocks = list(float_blocks(frames, 2_000))
    assert [b.shape[1] for b in blocks] == [2_048, 2_048, 904]  # whole frames until size is reached
    assert all(b.dtype == np.float64 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), signal)


@pytest.mark.parametrize("rate_out", [44_100, 16_000])
def test_rate_converter_streams_blocks_to_the_right_length_and_pitch(rate_out):
    """48 kHz blocks out at ``rate_out``, flushed at the end: the length scales with the rate
    and a 1 kHz tone stays a 1 kHz tone at the same level."""
    rate_in, seconds = 48_000, 2
    tone = 0.5 * np.sin(2 * np.pi * 1_000 * np.arange(rate_in * seconds) / rate_in)[None, :]
    convert = RateConverter("mono", rate_in, rate_out)
    parts = [convert(tone[:, start : start + 12_000]) for start in range(0, tone.shape[1], 12_000)]
    parts.append(convert(None))
    out = np.concatenate([p for p in parts if p.size], axis=1)[0]
    assert abs(len(out) - rate_out * seconds) <= 2
    middle = out[rate_out // 2 : rate_out // 2 + rate_out // 2]  # past the filter's edges
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
    assert np.fft.rfftfreq(len(middle), 1 / rate_out)[np.argmax(spectrum)] == pytest.approx(1_000, abs=4)
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
