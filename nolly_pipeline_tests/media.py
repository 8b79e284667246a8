"""Tiny but real media files for pipeline tests (inputs are probed before any work)."""

from __future__ import annotations

import functools
import io
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


@functools.lru_cache(maxsize=None)
def tiny_video(frames: int = 5, size: int = 64) -> bytes:
    """An H.264 MP4 of a few flat frames (about 2 kB)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for index in range(frames):
            picture = np.full((size, size, 3), 40 * index % 255, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


@functools.lru_cache(maxsize=None)
def tiny_wav(seconds: float = 0.5) -> bytes:
    """A mono 16-bit WAV tone."""
    samples = int(48000 * seconds)
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=48000)
        frame = av.AudioFrame.from_ndarray(tone[np.newaxis, :], format="fltp", layout="mono")
        frame.sample_rate = 48000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def write_png(path: Path) -> Path:
    """A 32x32 grey PNG at ``path``."""
    cv2.imwrite(str(path), np.full((32, 32, 3), 128, dtype=np.uint8))
    return path
