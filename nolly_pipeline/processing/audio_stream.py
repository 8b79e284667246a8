"""Audio as audio clean-up streams it: decoded float blocks, rate conversion, the raw scratch.

Decoding goes through PyAV and FFmpeg's swresample to planar float at the rate asked for,
re-chunked into blocks of ``BLOCK_SECONDS``; the scratch file between the two passes holds
interleaved little-endian float32. Nothing holds more than a block in memory.
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import BinaryIO, Iterable, Iterator

import av
import numpy as np

BLOCK_SECONDS = 0.25  # processing granularity: big enough to amortise numpy call overhead


def float_frame(data: np.ndarray, layout: str, rate: int, pts: int | None) -> av.AudioFrame:
    """A planar float32 frame of ``data`` (``[channels, samples]``), stamped in samples."""
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data, dtype=np.float32),
                                       format="fltp", layout=layout)
    frame.sample_rate = rate
    frame.time_base = Fraction(1, rate)
    frame.pts = pts
    return frame


class FloatFrames:
    """One audio stream decoded and resampled to planar float at ``rate``, as it plays.

    ``start`` is the first decoded frame's time (seconds), known once iteration began.
    """

    def __init__(self, container: av.container.InputContainer, stream: av.audio.stream.AudioStream,
                 rate: int) -> None:
        self._container, self._stream = container, stream
        layout = layout_name(stream.codec_context.channels, stream)
        self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        self.start: float | None = None

    def __iter__(self) -> Iterator[av.AudioFrame]:
        for frame in self._container.decode(self._stream):
            if self.start is None:
                self.start = float(frame.time or 0.0)
            yield from self._resampler.resample(frame)
        yield from self._resampler.resample(None)


def float_blocks(frames: Iterable[av.AudioFrame], size: int) -> Iterator[np.ndarray]:
    """Re-chunk decoded frames (often ~1k samples) into ``size``-sample float64 blocks."""
    parts: list[np.ndarray] = []
    held = 0
    for frame in frames:
        parts.append(frame.to_ndarray())
        held += frame.samples
        if held >= size:
            yield np.concatenate(parts, axis=1).astype(np.float64)
            parts, held = [], 0
    if parts:
        yield np.concatenate(parts, axis=1).astype(np.float64)


class RateConverter:
    """Streaming sample-rate conversion of float blocks (FFmpeg's swresample)."""

    def __init__(self, layout: str, rate_in: int, rate_out: int) -> None:
        self._layout, self._rate_in = layout, rate_in
        self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate_out)
        self._pts = 0

    def __call__(self, block: np.ndarray | None) -> np.ndarray:
        """Convert ``block``; ``None`` flushes what the filter still holds."""
        frame = None
        if block is not None:
            frame = float_frame(block, self._layout, self._rate_in, self._pts)
            self._pts += block.shape[1]
        out = [f.to_ndarray() for f in self._resampler.resample(frame)]
        return np.concatenate(out, axis=1).astype(np.float64) if out else np.zeros((0, 0))


def layout_name(channels: int, stream: av.audio.stream.AudioStream) -> str:
    """The stream's channel layout, or ``<n>c`` when FFmpeg only knows the channel count."""
    name = stream.codec_context.layout.name
    return name if name and "channels" not in name else f"{channels}c"


def scratch_samples(scratch: BinaryIO, channels: int) -> int:
    """Samples per channel in the scratch file."""
    scratch.seek(0, 2)
    return scratch.tell() // (4 * channels)


def scratch_blocks(scratch: BinaryIO, channels: int, size: int, start: int = 0,
                   stop: int | None = None) -> Iterator[np.ndarray]:
    """Samples ``start`` to ``stop`` (the end) of the scratch file, as float64
    ``[channels, size]`` blocks (last one shorter).

    Reads by offset (``os.pread``), never moving the file's position, so that several
    readers (the gain search's parts, on threads) can share one file.
    """
    scratch.flush()
    frame = channels * 4
    position, end = start * frame, None if stop is None else stop * frame
    while end is None or position < end:
        raw = os.pread(scratch.fileno(), size * frame if end is None else min(size * frame, end - position),
                       position)
        if not raw:
            return
        position += len(raw)
        yield np.frombuffer(raw, dtype="<f4").reshape(-1, channels).T.astype(np.float64)
