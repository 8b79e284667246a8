"""Per-channel denoisers for dialogue and a streaming high-pass, on float blocks.

DeepFilterNet3 (``dfn3.py``, the default), NSNet2 (``nsnet2.py``), RNNoise (the recurrent
network in ``pyrnnoise``) followed by a Wiener post-filter guided by its voice activity, or
a stationary spectral filter for material a speech model would gate. Every class keeps its state between
blocks, so audio of any length streams through. ``strength`` (0-1) scales each one's
attenuation in dB: lower it when the result sounds processed.
"""

from __future__ import annotations

import ctypes
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfilt

from nolly_pipeline.processing.dfn3 import DFN3
from nolly_pipeline.processing.nsnet2 import NSNet2
from nolly_pipeline.processing.overlap_add import HalfOverlapAdd
from nolly_pipeline.processing.padded_drain import PaddedDrain


class _WienerPostFilter:
    """Wiener filter on the noisy input, with RNNoise's output as the speech estimate.

    RNNoise applies one gain per 22 bands, so noise between speech harmonics survives;
    pink noise, loud where voiced speech is, suffers most. Here, per 25 Hz bin, the speech
    power is RNNoise's output power and the noise power is a stationary estimate averaged
    over frames RNNoise's voice activity detector calls non-speech, and the gain
    ``S / (S + N)`` is applied to the noisy input. Speech never meets a gate: where
    RNNoise kept speech the gain stays near 1. Until a non-speech frame has been seen,
    RNNoise's output passes through unchanged.

    STFT: sqrt-Hann window of two hops at 50% overlap (perfect reconstruction); one hop is
    two RNNoise frames, so its voice activity lines up with STFT frames.
    """

    hop = 960
    # RNNoise voice probability below which a frame feeds the noise estimate. High on
    # purpose: a few weak-speech frames in the estimate cost less than an estimate fed
    # too few frames (0.5 -> 0.9: +0.4 dB SNR on speech in pink noise, +0.7 in white).
    _noise_threshold = 0.9
    _noise_memory = 0.995  # per noise frame: the estimate spans a few seconds of pauses

    def __init__(self, strength: float) -> None:
        self._strength = strength
        self._window = np.sqrt(np.hanning(2 * self.hop + 1)[:-1])
        self._noisy = np.zeros(self.hop)
        self._speech = np.zeros(self.hop)
        self._vad = np.ones(4)  # two hops of per-frame voice probability, oldest first
        self._add = HalfOverlapAdd(self.hop)
        self._noise_sum = np.zeros(self.hop + 1)
        self._noise_count = 0.0

    def __call__(self, noisy: np.ndarray, speech: np.ndarray, vad: np.ndarray) -> np.ndarray:
        """Filter aligned blocks (whole hops); output lags by one hop (overlap-add)."""
        hops = len(noisy) // self.hop
        noisy_spec = self._stft(np.concatenate([self._noisy, noisy]), hops)
        speech_spec = self._stft(np.concatenate([self._speech, speech]), hops)
        self._noisy, self._speech = noisy[-self.hop :], speech[-self.hop :]
        vad = np.concatenate([self._vad, vad])
        self._vad = vad[-4:]
        frame_vad = np.lib.stride_tricks.sliding_window_view(vad, 4)[: 2 * hops : 2].max(axis=1)
        self._update_noise(noisy_spec[frame_vad < self._noise_threshold])
        if self._noise_count == 0:
            # No noise estimate yet: RNNoise's own output, mixed with the input below strength 1.
            return self._overlap_add(self._strength * speech_spec + (1 - self._strength) * noisy_spec)
        noise = self._noise_sum / self._noise_count
        speech_power = np.abs(speech_spec) ** 2
        gain = speech_power / (speech_power + noise + 1e-20)
        return self._overlap_add(noisy_spec * (gain if self._strength == 1 else gain**self._strength))

    def _stft(self, signal: np.ndarray, hops: int) -> np.ndarray:
        frames = np.lib.stride_tricks.sliding_window_view(signal, 2 * self.hop)[:: self.hop]
        return np.fft.rfft(frames[:hops] * self._window, axis=1)

    def _update_noise(self, noise_frames: np.ndarray) -> None:
        if len(noise_frames) == 0:
            return
        decay = self._noise_memory ** len(noise_frames)
        self._noise_sum = self._noise_sum * decay + np.sum(np.abs(noise_frames) ** 2, axis=0)
        self._noise_count = self._noise_count * decay + len(noise_frames)

    def _overlap_add(self, spectra: np.ndarray) -> np.ndarray:
        return self._add(np.fft.irfft(spectra, axis=1) * self._window)


class _RNNoise(PaddedDrain):
    """RNNoise (recurrent network trained on speech) on one channel, then the post-filter.

    Calls the library bundled in ``pyrnnoise`` directly: its own wrapper re-creates numpy
    arrays and resampling graphs per frame, which is several times slower.
    """

    _rnn_frame = 480
    _rnn_latency = 960  # samples of delay, measured for pyrnnoise 0.4.5; = post-filter hop
    frame = _WienerPostFilter.hop
    latency = _rnn_latency + _WienerPostFilter.hop

    def __init__(self, strength: float = 1.0) -> None:
        from pyrnnoise import rnnoise as lib  # deferred: loads a 15 MB shared library

        self._lib = lib.lib
        self._state = lib.create()
        self._destroy = lib.destroy
        self._buf = np.zeros(self._rnn_frame, dtype=np.float32)
        self._ptr = self._buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        self._noisy = np.zeros(self._rnn_latency)  # input held back to line up with output
        self._post = _WienerPostFilter(strength)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        denoised = np.empty(len(block))
        vad = np.empty(len(block) // self._rnn_frame)
        for index, start in enumerate(range(0, len(block), self._rnn_frame)):
            # RNNoise expects int16-scaled floats.
            np.multiply(block[start : start + self._rnn_frame], 32768.0, out=self._buf)
            vad[index] = self._lib.rnnoise_process_frame(self._state, self._ptr, self._ptr)
            denoised[start : start + self._rnn_frame] = self._buf
        denoised *= 1.0 / 32768.0
        noisy = np.concatenate([self._noisy, block])
        self._noisy = noisy[len(block) :]
        return self._post(noisy[: len(block)], denoised, vad)

    def __del__(self) -> None:
        self._destroy(self._state)


class _Spectral(PaddedDrain):
    """Stationary-noise Wiener filter for material a speech model would gate (music, ambience).

    STFT with a sqrt-Hann window at 50% overlap (perfect reconstruction); the noise floor per
    bin is the minimum of the smoothed power over the last ~1 s (minimum statistics), so it
    follows slowly changing noise without a separate noise sample.
    """

    frame = 512  # hop
    latency = 512
    _history = 96  # frames of smoothed power kept for the minimum (~1 s at 48 kHz)

    def __init__(self, strength: float = 1.0) -> None:
        self._strength = strength
        size = 2 * self.frame
        self._window = np.sqrt(np.hanning(size + 1)[:size])
        self._input = np.zeros(size)
        self._tail = np.zeros(self.frame)
        self._smoothed: np.ndarray | None = None
        self._powers: list[np.ndarray] = []
        self._gain: np.ndarray | None = None

    def __call__(self, block: np.ndarray) -> np.ndarray:
        out = np.empty_like(block)
        for start in range(0, len(block), self.frame):
            self._input[: self.frame] = self._input[self.frame :]
            self._input[self.frame :] = block[start : start + self.frame]
            spectrum = np.fft.rfft(self._input * self._window)
            power = spectrum.real**2 + spectrum.imag**2
            self._smoothed = power if self._smoothed is None else 0.85 * self._smoothed + 0.15 * power
            self._powers.append(self._smoothed)
            if len(self._powers) > self._history:
                self._powers.pop(0)
            noise = 2.0 * np.min(self._powers, axis=0)  # minimum statistics under-estimate: x2
            gain = np.maximum(1.0 - 1.5 * noise / np.maximum(power, 1e-20), 0.1)
            # Fast attack, slow release keeps residual noise from "twinkling" (musical noise).
            self._gain = gain if self._gain is None else np.maximum(gain, 0.6 * self._gain)
            gain = self._gain if self._strength == 1 else self._gain**self._strength
            shaped = np.fft.irfft(spectrum * gain) * self._window
            out[start : start + self.frame] = self._tail + shaped[: self.frame]
            self._tail = shaped[self.frame :]
        return out


class Denoiser:
    """Feeds any chunk size to per-channel frame denoisers and removes their latency.

    Output sample *n* lines up with input sample *n*, and the total length is preserved,
    which keeps audio in sync with a copied video stream. Each channel runs on its own
    worker thread with one block in flight: RNNoise runs in C with the GIL released, so it
    overlaps decoding, filtering and metering on the calling thread (and other channels);
    so does onnxruntime for DeepFilterNet3 and NSNet2.
    """

    def __init__(self, kind: str, channels: int, *, strength: float = 1.0,
                 model_path: Path | None = None) -> None:
        def factory() -> _RNNoise | _Spectral | NSNet2 | DFN3:
            if kind in ("dfn3", "nsnet2"):
                if model_path is None:
                    raise ValueError(f"the {kind} denoiser needs its model files")
                return DFN3(model_path, strength) if kind == "dfn3" else NSNet2(model_path, strength)
            return _RNNoise(strength) if kind == "rnnoise" else _Spectral(strength)

        self._channels = [factory() for _ in range(channels)]
        self._workers = [ThreadPoolExecutor(1) for _ in range(channels)]
        self._frame = self._channels[0].frame
        self._latency = self._channels[0].latency
        self._to_skip = self._latency
        self._pending = np.zeros((channels, 0))
        self._in_flight: list[Future] = []
        self._samples_in = 0
        self._samples_out = 0

    def close(self) -> None:
        for worker in self._workers:
            worker.shutdown()

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Start denoising ``chunk``; returns the output of the chunk before (if any)."""
        self._samples_in += chunk.shape[1]
        return self._submit(np.concatenate([self._pending, chunk], axis=1))

    def flush(self) -> np.ndarray:
        """The input still pending, then all that the denoisers hold back as latency."""
        owed = self._samples_in - self._samples_out
        done = self._collect()
        self._in_flight = [worker.submit(den.drain, self._pending[c])
                           for c, (worker, den) in enumerate(zip(self._workers, self._channels))]
        self._pending = self._pending[:, :0]
        return np.concatenate([done, self._collect()], axis=1)[:, :owed]

    def _submit(self, data: np.ndarray) -> np.ndarray:
        usable = data.shape[1] - data.shape[1] % self._frame
        self._pending = data[:, usable:]
        done = self._collect()
        if usable:
            self._in_flight = [worker.submit(den, data[c, :usable]) for c, (worker, den)
                               in enumerate(zip(self._workers, self._channels))]
        return done

    def _collect(self) -> np.ndarray:
        if not self._in_flight:
            return np.zeros((len(self._channels), 0))
        out = np.stack([future.result() for future in self._in_flight])
        self._in_flight = []
        skip = min(self._to_skip, out.shape[1])
        self._to_skip -= skip
        self._samples_out += out.shape[1] - skip
        return out[:, skip:]


class Highpass:
    """Second-order Butterworth high-pass (rumble, handling noise), state kept across blocks."""

    def __init__(self, cutoff_hz: float, rate: int, channels: int) -> None:
        self._sos = butter(2, cutoff_hz, "highpass", fs=rate, output="sos")
        self._state = np.zeros((len(self._sos), channels, 2))

    def __call__(self, block: np.ndarray) -> np.ndarray:
        out, self._state = sosfilt(self._sos, block, axis=1, zi=self._state)
        return out
