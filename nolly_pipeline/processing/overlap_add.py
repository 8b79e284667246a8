"""Streaming overlap-add of frames that overlap by half, shared by the frame denoisers."""

from __future__ import annotations

import numpy as np


class HalfOverlapAdd:
    """Adds frames of ``2 * hop`` samples, each starting ``hop`` after the one before; the
    second half of the last frame is kept for the next call, so blocks join seamlessly."""

    def __init__(self, hop: int) -> None:
        self._hop = hop
        self._tail = np.zeros(hop)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """``frames`` ``[n, 2 * hop]``, windowed; returns ``n * hop`` finished samples."""
        if len(frames) == 0:
            return np.zeros(0)
        hop = self._hop
        out = frames[:, :hop].copy()
        out[0] += self._tail
        out[1:] += frames[:-1, hop:]
        self._tail = frames[-1, hop:]
        return out.reshape(-1)
