"""DeepFilterNet3's signal front end (libDF's), in numpy: STFT, ERB bands, input features.

The exported ONNX graphs take features, not audio, so this re-implements what libDF (the
Rust library DeepFilterNet ships) computes around them, with the constants of the export's
``config.ini``: 48 kHz, Vorbis window of 960, hop 480, 32 ERB bands, deep filtering on the
lowest 96 bins with order 5 and a lookahead of 2 frames. Feature normalisation runs as
exponential means whose state :class:`FeatureState` carries from block to block, so the
features of a stream are the same whatever its blocks are.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

RATE = 48_000
FFT = 960
HOP = 480
NB_ERB = 32
NB_DF = 96
DF_ORDER = 5
LOOKAHEAD = 2  # frames: the model's outputs for spectrum frame t come with its input frame t + 2
_ALPHA = float(np.exp(-HOP / RATE))  # norm_tau = 1 s
_SCALE = 2.0 * HOP / FFT**2  # libDF's window normalisation, which the model was trained with


def _vorbis_window(size: int) -> np.ndarray:
    k = np.arange(size, dtype=np.float64)
    return np.sin(0.5 * np.pi * np.sin(0.5 * np.pi * (k + 0.5) / (size // 2)) ** 2)


def _erb_widths(min_bins: int = 2) -> np.ndarray:
    """Bins per ERB band, exactly as libDF's ``erb_fb`` splits the 481 bins."""
    bin_hz = RATE / FFT
    to_erb = lambda f: 9.265 * np.log(1.0 + f / (24.7 * 9.265))  # noqa: E731
    from_erb = lambda e: 24.7 * 9.265 * (np.exp(e / 9.265) - 1.0)  # noqa: E731
    low, high = to_erb(0.0), to_erb(RATE / 2)
    step = (high - low) / NB_ERB
    widths, previous, over = [0] * NB_ERB, 0, 0
    for i in range(1, NB_ERB + 1):
        edge = int(from_erb(low + i * step) / bin_hz + 0.5)
        width = edge - previous - over
        if width < min_bins:
            over, width = min_bins - width, min_bins
        else:
            over = 0
        widths[i - 1], previous = width, edge
    widths[-1] += 1
    widths[-1] -= max(sum(widths) - (FFT // 2 + 1), 0)
    return np.array(widths)


WINDOW = _vorbis_window(FFT)
ERB_WIDTHS = _erb_widths()
_ERB_STARTS = np.concatenate([[0], np.cumsum(ERB_WIDTHS)[:-1]])
BAND_OF_BIN = np.repeat(np.arange(NB_ERB), ERB_WIDTHS)


def analyse(signal: np.ndarray, frames: int) -> np.ndarray:
    """``frames`` spectra of ``signal`` (which starts with the FFT - HOP samples before them)."""
    windows = np.lib.stride_tricks.sliding_window_view(signal, FFT)[::HOP][:frames]
    return np.fft.rfft(windows * WINDOW, axis=1) * _SCALE


def synthesise(spectra: np.ndarray) -> np.ndarray:
    """Windowed frames back, ``[frames, FFT]``, for overlap-add at HOP."""
    return np.fft.irfft(spectra, n=FFT, axis=1) * (FFT * WINDOW)


class FeatureState:
    """The model's two inputs per frame, normalised by running means kept across blocks.

    ERB features: band power in dB minus its exponential mean, / 40. Complex features: the
    lowest 96 bins divided by the square root of their exponential mean magnitude.
    """

    def __init__(self) -> None:
        self._erb_mean = _ALPHA * np.linspace(-60.0, -90.0, NB_ERB)
        self._unit_mean = _ALPHA * np.linspace(0.001, 0.0001, NB_DF)

    def __call__(self, spectra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(erb [T, 32], spec [2, T, 96])`` float32 features of ``spectra``."""
        power = spectra.real**2 + spectra.imag**2
        erb = 10 * np.log10(np.add.reduceat(power, _ERB_STARTS, axis=1) / ERB_WIDTHS + 1e-10)
        mean, state = lfilter([1 - _ALPHA], [1, -_ALPHA], erb, axis=0, zi=self._erb_mean[None])
        self._erb_mean = state[0]
        low = spectra[:, :NB_DF]
        unit, state = lfilter([1 - _ALPHA], [1, -_ALPHA], np.abs(low), axis=0,
                              zi=self._unit_mean[None])
        self._unit_mean = state[0]
        normalised = low / np.sqrt(unit)
        return (((erb - mean) / 40.0).astype(np.float32),
                np.stack([normalised.real, normalised.imag]).astype(np.float32))
