"""Per-sample true peaks of the cleaned signal, kept on disk beside the scratch file.

Pass 2's true-peak limiter, and each dry run of the gain search before it (two to four per
encode), oversampled the whole signal 4x to find its peaks: 57% of a dry run's time on
60 s of speech at -16 LUFS. A gain scales the peaks as it scales the signal, so pass 1
oversamples once and keeps every sample's peak (linked across channels, as the limiter
uses them), and each limiter reads them times its gain. Stored as float16 rounded up: 2
bytes per frame on disk (the scratch holds 4 per sample), never under the true value and at
most 0.01 dB over it, so the limiter's ceiling still holds.

The peaks are those of the limiter's oversampler, in its order: entry *i* is the peak of
sample ``i - PEAK_DELAY``, then the ringing after the last sample. Only the plain signal has
them: the soft clipper reshapes the peaks, and a limiter behind it oversamples its own.
"""

from __future__ import annotations

import os
from typing import BinaryIO

import numpy as np

from nolly_pipeline.processing.loudness import Oversampler, db

_ITEM = np.dtype("<f2")


class PeakTrack:
    """Write the true peaks of a stream block by block (:meth:`write`, :meth:`finish`), then
    read any span of them, from several threads at once (:meth:`read`)."""

    def __init__(self, file: BinaryIO, channels: int) -> None:
        self._file = file
        self._oversampler = Oversampler(channels)
        self._channels = channels
        self._peak = 0.0

    def write(self, block: np.ndarray) -> None:
        """The next ``[channels, n]`` samples of the stream."""
        peaks = self._oversampler(block, 0.0)  # threshold 0: every point interpolated
        stored = peaks.astype(_ITEM)
        low = stored < peaks
        stored[low] = np.nextafter(stored[low], np.inf)  # rounded up: never under the peak
        self._file.write(stored.tobytes())
        self._peak = max(self._peak, float(stored.max(initial=0.0)))

    def finish(self) -> float:
        """Write the ringing past the last sample; the stream's true peak (dBTP) as stored."""
        self.write(np.zeros((self._channels, Oversampler.reach)))
        self._file.flush()
        return db(self._peak)

    def read(self, start: int, count: int) -> np.ndarray:
        """Entries ``start`` to ``start + count`` (zeros past the end), as float64."""
        raw = os.pread(self._file.fileno(), count * _ITEM.itemsize, start * _ITEM.itemsize)
        peaks = np.zeros(count)
        peaks[: len(raw) // _ITEM.itemsize] = np.frombuffer(raw, dtype=_ITEM)
        return peaks
