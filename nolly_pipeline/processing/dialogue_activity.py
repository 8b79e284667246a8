"""Where the dialogue is: the frames in which denoisers limit their attenuation, and the
bins of those frames where it surely dominates.

NSNet2 and DeepFilterNet3 both hesitate between the dialogue and other voices (a crowd, a
canteen), and both cap their cut in the frames found here, so that the line stays
intelligible. The detectors keep their state across streamed blocks.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import minimum_filter1d


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


class DominantBins:
    """Bins where the dialogue surely dominates: the input's power stands ``margin_db`` over
    the background's level there, the minimum of its 3-frame average over the last
    ``window`` frames that were not silent (minimum statistics: other voices and steady
    noise leave a floor in every bin, which the dialogue, nearer the microphone, rises far
    above).

    A learned denoiser that cannot tell the dialogue from background talkers may still cut
    such bins deep; its cut there is what costs intelligibility (issue 10: under a crowd at
    10 dB SNR, DeepFilterNet3's STOI drop fell from 0.068 to 0.027 with the cut capped at
    3 dB in these bins). Causal and block-exact: the last frames are kept across calls.
    """

    _smooth = 3  # frames averaged before the minimum: one low frame is not the floor

    def __init__(self, bins: int, *, margin_db: float, window: int, silence_power: float) -> None:
        self._ratio = 10 ** (margin_db / 10)
        # Frames quieter than this in all (digital silence, a faded head) say nothing of the
        # background: left in, they would floor it at zero, and the start of a noisy take
        # after them would count as dialogue everywhere.
        self._silence = silence_power
        self._window = window | 1  # odd: the causal origin below is exact
        self._recent: np.ndarray | None = None  # the last _smooth - 1 input power frames
        self._averages = np.zeros((0, bins))  # the last window - 1 averaged frames

    def __call__(self, power: np.ndarray) -> np.ndarray:
        """``power``: the input's power spectra ``[frames, bins]``; a bool per frame and bin."""
        if self._recent is None:  # before the start: the first frame, as if it had lasted
            self._recent = np.repeat(power[:1], self._smooth - 1, axis=0)
        recent = np.concatenate([self._recent, power])
        averages = sliding_window_view(recent, self._smooth, axis=0).mean(axis=-1)
        averages[averages.sum(axis=1) < self._silence] = np.inf
        self._recent = recent[len(recent) - (self._smooth - 1):]
        history = np.concatenate([self._averages, averages])
        floor = minimum_filter1d(history, self._window, axis=0, origin=(self._window - 1) // 2,
                                 mode="nearest")[len(self._averages):]
        self._averages = history[max(len(history) - (self._window - 1), 0):]
        return power > floor * self._ratio
