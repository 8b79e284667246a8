"""Dialogue clean-up: denoise, high-pass, then two-pass EBU R128 loudness normalisation.

Pass 1 streams the decoded audio (resampled to 48 kHz float, RNNoise's native rate) through
the denoiser, FFmpeg's ``highpass`` and ``ebur128`` meter into a float WAV scratch file.
Pass 2 streams that file through ``loudnorm`` given the pass-1 measurements (``linear=true``):
a plain gain when the true-peak limit allows it, otherwise loudnorm's own look-ahead
true-peak limiter. A single-pass loudnorm would have to guess the programme loudness, and
pyloudnorm-style gain alone clips peaks, so two passes are what make both the ±1 LU target
and the true-peak ceiling hold. Nothing holds more than a chunk of samples in memory.

Video inputs keep their video packets untouched; only the audio is re-encoded.
"""

from __future__ import annotations

import ctypes
import math
import tempfile
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Literal

import av
import av.error
import av.filter
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from nolly_pipeline.errors import InputError
from nolly_pipeline.processing.base import OutputFile, ProcessingResult, ProgressFn, no_progress
from nolly_pipeline.processing.media import (
    MediaInfo,
    ProgressTicker,
    copy_stream,
    open_input,
    probe,
    remux_packet,
)

WORK_RATE = 48_000  # RNNoise only runs at 48 kHz; everything in pass 1 uses it
_LOSSY_CODECS = {"aac", "libmp3lame", "libopus", "libvorbis"}
# FFmpeg names encoders differently from the codecs they produce for a few formats.
_ENCODER_NAMES = {"mp3": "libmp3lame", "opus": "libopus", "vorbis": "libvorbis"}
# Lossy encoders add inter-sample overshoot after normalisation; aim this much below the limit.
_LOSSY_PEAK_MARGIN_DB = 1.0
_CONTENT_TYPES = {
    ".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".m4a": "audio/mp4",
    ".mp4": "video/mp4", ".mov": "video/quicktime", ".mkv": "video/x-matroska",
}


class AudioCleanSettings(BaseModel):
    """Editor-facing controls; defaults suit dialogue for online delivery (-16 LUFS)."""

    model_config = ConfigDict(extra="forbid")

    denoise: Literal["rnnoise", "spectral", "off"] = "rnnoise"
    loudness_lufs: float = Field(-16.0, ge=-40.0, le=-5.0)
    true_peak_db: float = Field(-1.5, ge=-9.0, le=0.0)
    highpass_hz: float = Field(80.0, ge=0.0, le=1000.0)


# --------------------------------------------------------------------------- denoisers


class _RNNoise:
    """RNNoise (recurrent network trained on speech) on one channel, 480-sample frames.

    Calls the library bundled in ``pyrnnoise`` directly: its own wrapper re-creates numpy
    arrays and resampling graphs per frame, which is several times slower.
    """

    frame = 480
    latency = 960  # samples of delay between input and output, measured for pyrnnoise 0.4.5

    def __init__(self) -> None:
        from pyrnnoise import rnnoise as lib  # deferred: loads a 15 MB shared library

        self._lib = lib.lib
        self._state = lib.create()
        self._destroy = lib.destroy
        self._buf = np.zeros(self.frame, dtype=np.float32)
        self._ptr = self._buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

    def __call__(self, block: np.ndarray) -> np.ndarray:
        out = np.empty_like(block)
        for start in range(0, len(block), self.frame):
            # RNNoise expects int16-scaled floats.
            np.multiply(block[start : start + self.frame], 32768.0, out=self._buf)
            self._lib.rnnoise_process_frame(self._state, self._ptr, self._ptr)
            out[start : start + self.frame] = self._buf
        out *= 1.0 / 32768.0
        return out

    def __del__(self) -> None:
        self._destroy(self._state)


class _Spectral:
    """Stationary-noise Wiener filter for material RNNoise would gate (music, ambience).

    STFT with a sqrt-Hann window at 50% overlap (perfect reconstruction); the noise floor per
    bin is the minimum of the smoothed power over the last ~1 s (minimum statistics), so it
    follows slowly changing noise without a separate noise sample.
    """

    frame = 512  # hop
    latency = 512
    _history = 96  # frames of smoothed power kept for the minimum (~1 s at 48 kHz)

    def __init__(self) -> None:
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
            shaped = np.fft.irfft(spectrum * self._gain) * self._window
            out[start : start + self.frame] = self._tail + shaped[: self.frame]
            self._tail = shaped[self.frame :]
        return out


class _Denoiser:
    """Feeds any chunk size to per-channel frame denoisers and removes their latency.

    Output sample *n* lines up with input sample *n*, and the total length is preserved,
    which keeps audio in sync with a copied video stream.
    """

    def __init__(self, kind: str, channels: int) -> None:
        factory = _RNNoise if kind == "rnnoise" else _Spectral
        self._channels = [factory() for _ in range(channels)]
        self._frame = self._channels[0].frame
        self._to_skip = self._channels[0].latency
        self._pending = np.zeros((channels, 0), dtype=np.float32)
        self._samples_in = 0
        self._samples_out = 0
        # RNNoise runs in C with the GIL released (ctypes), so channels scale across cores.
        self._pool = ThreadPoolExecutor(channels) if channels > 1 and kind == "rnnoise" else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def process(self, chunk: np.ndarray) -> np.ndarray:
        self._samples_in += chunk.shape[1]
        return self._run(np.concatenate([self._pending, chunk], axis=1))

    def flush(self) -> np.ndarray:
        """Push zeros through so the last real samples (held as latency) come out."""
        owed = self._samples_in - self._samples_out
        pad = np.zeros((len(self._channels), owed + self._to_skip + self._frame), np.float32)
        return self._run(np.concatenate([self._pending, pad], axis=1))[:, :owed]

    def _run(self, data: np.ndarray) -> np.ndarray:
        usable = data.shape[1] - data.shape[1] % self._frame
        self._pending = data[:, usable:]
        if usable == 0:
            return np.zeros((len(self._channels), 0), np.float32)
        blocks = [data[c, :usable] for c in range(len(self._channels))]
        if self._pool is None:
            out = np.stack([den(block) for den, block in zip(self._channels, blocks)])
        else:
            out = np.stack(list(self._pool.map(lambda den, block: den(block), self._channels, blocks)))
        skip = min(self._to_skip, out.shape[1])
        self._to_skip -= skip
        out = out[:, skip:]
        self._samples_out += out.shape[1]
        return out.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- graphs


def _pull_all(graph: av.filter.Graph) -> list[av.AudioFrame]:
    frames = []
    while True:
        try:
            frames.append(graph.pull())
        except (av.error.BlockingIOError, av.error.EOFError):
            return frames


def _chain(graph: av.filter.Graph, *nodes) -> None:
    for left, right in zip(nodes, nodes[1:]):
        left.link_to(right)
    graph.configure()


def _frame(data: np.ndarray, layout: str, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp", layout=layout)
    frame.sample_rate = WORK_RATE
    frame.time_base = Fraction(1, WORK_RATE)
    frame.pts = pts
    return frame


class _Loudness:
    """Pass-1 measurements from FFmpeg's ``ebur128`` meter (the values loudnorm asks for)."""

    def __init__(self) -> None:
        self.integrated = -70.0
        self.lra = 0.0
        self.true_peak_db = -99.0

    def update(self, frame: av.AudioFrame) -> None:
        meta = frame.metadata
        if "lavfi.r128.I" in meta:
            self.integrated = float(meta["lavfi.r128.I"])
            self.lra = float(meta["lavfi.r128.LRA"])
        if "lavfi.r128.true_peak" in meta:
            peak = float(meta["lavfi.r128.true_peak"])  # linear, running maximum
            self.true_peak_db = max(self.true_peak_db, 20 * math.log10(max(peak, 1e-5)))


# --------------------------------------------------------------------------- processing


def audio_clean(
    src: Path,
    out_dir: Path,
    settings: AudioCleanSettings,
    *,
    progress: ProgressFn = no_progress,
) -> ProcessingResult:
    """Clean the (first) audio track of an audio or video file; output keeps its container."""
    info = probe(src)
    if not info.has_audio:
        raise InputError(f"{src.name} has no audio track to clean")
    if info.kind == "image":
        raise InputError(f"{src.name} is an image, not audio")
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = src.suffix.lower() if src.suffix.lower() in _CONTENT_TYPES else (
        ".mp4" if info.kind == "video" else ".wav"
    )
    dst = out_dir / f"{src.stem}_clean{suffix}"
    ticker = ProgressTicker(progress, 2 * max(int(info.duration * 1000), 1))

    with tempfile.TemporaryDirectory(prefix="nolly-audio-") as scratch:
        stage = Path(scratch) / "stage1.wav"
        loudness, start = _pass1(src, stage, settings, info, ticker)
        target_peak = settings.true_peak_db
        if _output_codec(info) in _LOSSY_CODECS:
            target_peak -= _LOSSY_PEAK_MARGIN_DB
        normalised = loudness.integrated > -60.0  # near-silence has no loudness to match
        _pass2(src, stage, dst, settings, info, loudness, target_peak, start, normalised, ticker)
    ticker.finish()
    return ProcessingResult(
        files=[OutputFile(path=dst, role="audio", content_type=_CONTENT_TYPES[suffix])],
        metadata={
            "denoise": settings.denoise,
            "input_lufs": round(loudness.integrated, 2),
            "input_true_peak_db": round(float(loudness.true_peak_db), 2),
            "target_lufs": settings.loudness_lufs if normalised else None,
            "sample_rate": info.sample_rate,
            "channels": info.channels,
            "duration": info.duration,
        },
    )


def _layout_name(channels: int, stream: av.audio.stream.AudioStream) -> str:
    name = stream.codec_context.layout.name
    return name if name and "channels" not in name else f"{channels}c"


def _pass1(
    src: Path, stage: Path, settings: AudioCleanSettings, info: MediaInfo, ticker: ProgressTicker
) -> tuple[_Loudness, float]:
    """Decode -> 48 kHz float -> denoise -> highpass -> ebur128 -> float WAV scratch file.

    Returns the measurements and the start time of the audio (to keep A/V offset).
    """
    loudness = _Loudness()
    start: float | None = None
    with open_input(src) as inp, av.open(str(stage), "w", format="wav") as out:
        a_in = inp.streams.audio[0]
        channels = a_in.codec_context.channels
        layout = _layout_name(channels, a_in)
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=WORK_RATE)
        graph = av.filter.Graph()
        nodes = [graph.add_abuffer(format="fltp", sample_rate=WORK_RATE, layout=layout,
                                   time_base=Fraction(1, WORK_RATE))]
        if settings.highpass_hz > 0:
            nodes.append(graph.add("highpass", f=str(settings.highpass_hz)))
        nodes += [graph.add("ebur128", peak="true", metadata="1"), graph.add("abuffersink")]
        _chain(graph, *nodes)
        a_out = out.add_stream("pcm_f32le", rate=WORK_RATE, layout=layout)
        denoiser = _Denoiser(settings.denoise, channels) if settings.denoise != "off" else None
        written = 0

        def emit(block: np.ndarray) -> None:
            nonlocal written
            if block.shape[1] == 0:
                return
            graph.push(_frame(block, layout, written))
            written += block.shape[1]
            for measured in _pull_all(graph):
                loudness.update(measured)
                measured.pts = None
                out.mux(a_out.encode(measured))
            ticker.advance(block.shape[1] * 1000 // WORK_RATE)

        def decoded() -> Iterator[av.AudioFrame]:
            for frame in inp.decode(a_in):
                yield from resampler.resample(frame)
            yield from resampler.resample(None)

        for frame in decoded():
            if start is None:
                start = float(frame.time or 0.0)
            block = frame.to_ndarray()
            emit(denoiser.process(block) if denoiser else block)
        if denoiser is not None:
            emit(denoiser.flush())
            denoiser.close()
        graph.push(None)
        for measured in _pull_all(graph):
            loudness.update(measured)
            measured.pts = None
            out.mux(a_out.encode(measured))
        out.mux(a_out.encode(None))
    if start is None:
        raise InputError(f"could not decode {src.name}: no decodable audio")
    return loudness, start


def _output_codec(info: MediaInfo) -> str:
    """Keep the source codec when we can encode it, so the file stays what the editor sent."""
    codec = _ENCODER_NAMES.get(info.audio_codec or "", info.audio_codec or "aac")
    try:
        av.Codec(codec, "w")
    except (av.error.FFmpegError, ValueError):
        return "aac"
    return codec


def _pass2(
    src: Path,
    stage: Path,
    dst: Path,
    settings: AudioCleanSettings,
    info: MediaInfo,
    loudness: _Loudness,
    target_peak: float,
    start: float,
    normalised: bool,
    ticker: ProgressTicker,
) -> None:
    """Scratch WAV -> loudnorm (measured, linear) -> original rate -> encode -> mux (+video)."""
    rate = info.sample_rate or WORK_RATE
    with open_input(src) as video_in, av.open(str(stage)) as stage_in, av.open(str(dst), "w") as out:
        a_stage = stage_in.streams.audio[0]
        layout = _layout_name(info.channels or 1, a_stage)
        codec = _output_codec(info)
        a_out = out.add_stream(codec, rate=rate, layout=layout)
        src_audio = video_in.streams.audio[0]
        if codec in _LOSSY_CODECS:
            a_out.bit_rate = src_audio.codec_context.bit_rate or 192_000
        elif src_audio.codec_context.format.name in {f.name for f in a_out.codec.audio_formats or []}:
            a_out.format = src_audio.codec_context.format.name  # keep PCM/FLAC bit depth
        a_out.time_base = Fraction(1, rate)
        video_streams = [s for s in video_in.streams.video if info.kind == "video"]
        v_outs = {v.index: copy_stream(out, v) for v in video_streams}

        graph = av.filter.Graph()
        nodes = [graph.add_abuffer(template=a_stage)]
        if normalised:
            nodes.append(graph.add(
                "loudnorm",
                I=str(settings.loudness_lufs),
                TP=str(target_peak),
                LRA=str(min(max(loudness.lra, 7.0), 50.0)),
                measured_I=str(loudness.integrated),
                measured_LRA=str(max(loudness.lra, 0.1)),
                measured_TP=str(loudness.true_peak_db),
                # ebur128 does not export the gate; I - 10 LU is where BS.1770 puts it.
                measured_thresh=str(loudness.integrated - 10.0),
                linear="true",
            ))
        nodes += [graph.add("aresample", out_sample_rate=str(rate)), graph.add("abuffersink")]
        _chain(graph, *nodes)

        video_packets = video_in.demux(*video_streams) if video_streams else iter(())
        pending_video = next(video_packets, None)
        offset = round(start * rate)
        written = 0

        def encode(frames: list[av.AudioFrame]) -> None:
            nonlocal written, pending_video
            for frame in frames:
                frame.pts = offset + written
                frame.time_base = Fraction(1, rate)
                written += frame.samples
                # Interleave copied video up to this audio time so the muxer never buffers much.
                now = (offset + written) / rate
                while pending_video is not None and (
                    pending_video.dts is None or float(pending_video.dts * pending_video.time_base) <= now
                ):
                    remux_packet(out, pending_video, v_outs[pending_video.stream.index])
                    pending_video = next(video_packets, None)
                out.mux(a_out.encode(frame))
                ticker.advance(frame.samples * 1000 // rate)

        for frame in stage_in.decode(a_stage):
            graph.push(frame)
            encode(_pull_all(graph))
        graph.push(None)
        encode(_pull_all(graph))
        out.mux(a_out.encode(None))
        while pending_video is not None:
            remux_packet(out, pending_video, v_outs[pending_video.stream.index])
            pending_video = next(video_packets, None)
