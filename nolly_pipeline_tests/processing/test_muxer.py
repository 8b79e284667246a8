"""EncodeMuxer: frames encoded and packets muxed in order on a worker thread; errors surface."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from nolly_pipeline.processing.media import ProgressTicker
from nolly_pipeline.processing.muxer import EncodeMuxer

RATE = 48_000


def _frame(samples: np.ndarray, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(samples[None, :].astype(np.float32), format="fltp", layout="mono")
    frame.sample_rate, frame.time_base, frame.pts = RATE, Fraction(1, RATE), pts
    return frame


def test_frames_are_encoded_in_order_and_progress_counts_them(tmp_path: Path) -> None:
    signal = np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE) * 0.5
    seen: list[tuple[int, int]] = []
    ticker = ProgressTicker(lambda done, total: seen.append((done, total)), 10)
    with av.open(str(tmp_path / "out.wav"), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=RATE, layout="mono")
        with EncodeMuxer(out, stream, ticker) as muxer:
            for start in range(0, RATE, RATE // 10):
                muxer.put_frame(_frame(signal[start:start + RATE // 10], start))
    with av.open(str(tmp_path / "out.wav")) as decoded:
        back = np.concatenate([f.to_ndarray() for f in decoded.decode(audio=0)], axis=1)[0]
    assert ticker.done == 10 and seen[-1] == (10, 10)
    np.testing.assert_allclose(back / 32768, signal, atol=1e-4)


def test_an_encoder_error_is_raised_on_the_producers_thread(tmp_path: Path) -> None:
    with av.open(str(tmp_path / "out.wav"), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=RATE, layout="mono")
        with pytest.raises(Exception) as raised:
            with EncodeMuxer(out, stream, ProgressTicker(lambda d, t: None, 1)) as muxer:
                muxer.put_frame(av.VideoFrame(16, 16, "rgb24"))  # not audio: the encoder refuses it
        assert raised.value is muxer.error
