"""Where the dialogue talks: the frames in which denoisers limit their attenuation.

NSNet2 and DeepFilterNet3 both hesitate between the dialogue and other voices (a crowd, a
canteen), and both cap their cut in the frames found here, so that the line stays
intelligible. The detector keeps its running peak across streamed blocks.
"""

from __future__ import annotations

import numpy as np


class TalkingFrames:
    """Frames whose denoised 300-4000 Hz level is within ``range_db`` of its running peak,
    the peak released by ``release_db`` per frame."""

    def __init__(self, nfft: int, rate: int, *, range_db: float, release_db: float, floor_power: float) -> None:
        freqs = np.fft.rfftfreq(nfft, 1 / rate)
        self._band = (freqs > 300) & (freqs < 4000)
        self._range_db, self._release_db, self._floor_power = range_db, release_db, floor_power
        self._peak = -120.0

    def __call__(self, power: np.ndarray) -> np.ndarray:
        """``power``: the denoised power spectra ``[frames, bins]``; one bool per frame."""
        level = 10 * np.log10(np.sum(power[:, self._band], axis=1) + self._floor_power)
        ramp = self._release_db * np.arange(len(level) + 1)
        peak = np.maximum.accumulate(np.concatenate([[self._peak], level]) + ramp) - ramp
        self._peak = float(peak[-1])
        return level > peak[1:] - self._range_db
