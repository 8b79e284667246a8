"""Dialogue clean-up: denoise, high-pass, then loudness normalisation under a true-peak ceiling.

Pass 1 streams the decoded audio (resampled to 48 kHz, the denoisers' native rate, when
denoising) through the denoiser and a high-pass, back to the source rate, and into a raw
float scratch file, metering BS.1770 loudness and every sample's true peak on the way (kept
on disk for the limiters, ``peak_track.py``). Pass 2 streams that file through one gain
(target minus measured loudness) and a look-ahead true-peak limiter, then encodes. Measuring
first is what lets a plain gain hit the ±1 LU target; the limiter is what keeps the ceiling
without loudnorm's dynamic mode (which misses the target by several LU). When the limiter
alone cannot reach the target (peaks too far above the loudness, as when RNNoise leaves only
the onsets of non-speech sounds), a soft clipper goes in front of it. Lossy encoders add
overshoot, so their output is decoded and re-measured, and pass 2 repeats with a corrected
gain and ceiling if it missed (``lossy_encode.py``). Nothing holds more than a block of samples in memory.

Video inputs keep their video packets untouched; only the audio is re-encoded.
"""

from __future__ import annotations

import tempfile
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import av.error
import numpy as np

from nolly_pipeline.errors import InputError
from nolly_pipeline.processing.base import OutputFile, ProcessingResult, ProgressFn, no_progress
from nolly_pipeline.processing.denoise import Denoiser, Highpass
from nolly_pipeline.processing.models import DENOISE_KINDS_WITH_MODELS, denoise_model_path
from nolly_pipeline.processing.audio_stream import (
    BLOCK_SECONDS,
    FloatFrames,
    RateConverter,
    float_blocks,
    float_frame,
    layout_name,
    scratch_blocks,
)
from nolly_pipeline.processing.gain_plan import PEAK_SAFETY_DB, GainPlan, Measured, limited, solve_gain
from nolly_pipeline.processing.loudness import LoudnessMeter, TruePeakMeter
from nolly_pipeline.processing.lossy_encode import (
    LOSSY_CODECS,
    encode_lossy,
    output_bit_rate,
)
from nolly_pipeline.processing.media import (
    MediaInfo,
    ProgressTicker,
    copy_stream,
    open_input,
    probe,
    remux_packet,
)
from nolly_pipeline.processing.settings import AudioCleanSettings
from nolly_pipeline.processing.muxer import EncodeMuxer
from nolly_pipeline.processing.peak_track import PeakTrack

# Bump when a change alters what this processor outputs for the same input and settings:
# finished jobs made by an older version then stop being reused for new ones (reuse.py).
# 2: NSNet2 became the default denoiser.
# 3: DeepFilterNet3 (dfn3) passes its ERB gains through DeepFilterNet's post-filter (its
#    limit in the bins where the dialogue dominates came before, without a bump).
# 4: the limiter reads pass 1's true peaks (peak_track.py), rounded up: at most 0.01 dB more
#    limiting on a peak.
# 5: the limiter's look-ahead and release went from 5 ms / 100 ms to 2 ms / 10 ms.
PROCESSING_VERSION = "audio-clean/5"

WORK_RATE = 48_000  # RNNoise, DeepFilterNet3 and NSNet2 run at 48 kHz; denoising happens at this rate
# When the source codec has no encoder here (PyAV's FFmpeg has no libvorbis), one that the
# container holds at any sample rate: lossless FLAC for Ogg (Opus would force 48 kHz).
_FALLBACK_CODECS = {".ogg": "flac"}
_WAV_CODECS = {"pcm_u8", "pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_f64le"}
# FFmpeg names encoders differently from the codecs they produce for a few formats.
_ENCODER_NAMES = {"mp3": "libmp3lame", "opus": "libopus", "vorbis": "libvorbis"}
_CONTENT_TYPES = {
    ".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".m4a": "audio/mp4",
    ".ogg": "audio/ogg", ".opus": "audio/ogg",
    ".mp4": "video/mp4", ".mov": "video/quicktime", ".mkv": "video/x-matroska",
}


def audio_clean(
    src: Path,
    out_dir: Path,
    settings: AudioCleanSettings,
    *,
    progress: ProgressFn = no_progress,
    models_dir: Path | None = None,
) -> ProcessingResult:
    """Clean the (first) audio track of an audio or video file; output keeps its container.

    ``models_dir`` holds the denoisers' models (``nolly-pipeline models fetch``); default cache if None.
    """
    model_path = (denoise_model_path(models_dir, settings.denoise)
                  if settings.denoise in DENOISE_KINDS_WITH_MODELS else None)
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

    with (tempfile.TemporaryFile(prefix="nolly-audio-") as scratch,
          tempfile.TemporaryFile(prefix="nolly-peaks-") as peaks):
        measured = _pass1(src, scratch, peaks, settings, info, ticker, model_path)
        output_lufs, output_peak, clipped = _normalise(src, scratch, dst, settings, info,
                                                       measured, ticker)
    ticker.finish()
    return ProcessingResult(
        files=[OutputFile(path=dst, role="audio", content_type=_CONTENT_TYPES[suffix])],
        metadata={
            "denoise": settings.denoise,
            "strength": settings.strength,
            "input_lufs": round(measured.loudness, 2),
            "input_true_peak_db": round(max(measured.true_peak_db, -99.0), 2),
            "target_lufs": settings.loudness_lufs if measured.normalisable else None,
            "output_lufs": round(output_lufs, 2),
            "output_true_peak_db": round(max(output_peak, -99.0), 2),
            "soft_clipped": clipped,
            "sample_rate": info.sample_rate,
            "channels": info.channels,
            "duration": info.duration,
        },
    )


def _pass1(
    src: Path, scratch: BinaryIO, peaks_file: BinaryIO, settings: AudioCleanSettings, info: MediaInfo,
    ticker: ProgressTicker, model_path: Path | None,
) -> Measured:
    """Decode -> (48 kHz) -> denoise -> high-pass -> (source rate) -> meters -> raw float32.

    The scratch file holds interleaved float32 at the output rate, ready for pass 2;
    ``peaks_file`` every sample's true peak (:class:`PeakTrack`), for its limiters.
    """
    with open_input(src) as inp:
        stream = inp.streams.audio[0]
        channels = stream.codec_context.channels
        rate = _output_rate(info)
        layout = layout_name(channels, stream)
        work_rate = WORK_RATE if settings.denoise != "off" else rate
        decoded = FloatFrames(inp, stream, work_rate)
        back = RateConverter(layout, work_rate, rate) if work_rate != rate else None
        denoiser = Denoiser(settings.denoise, channels, strength=settings.strength,
                            model_path=model_path) if settings.denoise != "off" else None
        highpass = Highpass(settings.highpass_hz, work_rate, channels) if settings.highpass_hz > 0 else None
        loudness, peaks = LoudnessMeter(rate, channels), PeakTrack(peaks_file, channels)

        def store(block: np.ndarray) -> None:
            if block.size == 0:
                return
            loudness.update(block)
            samples = block.astype("<f4")  # as pass 2 reads them back
            peaks.write(samples)
            scratch.write(np.ascontiguousarray(samples.T).tobytes())

        def emit(block: np.ndarray) -> None:
            if block.shape[1] == 0:
                return
            ticker.advance(block.shape[1] * 1000 // work_rate)
            block = highpass(block) if highpass else block
            store(back(block) if back else block)

        try:
            for block in float_blocks(decoded, int(BLOCK_SECONDS * work_rate)):
                emit(denoiser.process(block) if denoiser else block)
            if denoiser is not None:
                emit(denoiser.flush())
        finally:
            if denoiser is not None:
                denoiser.close()
        if back is not None:
            store(back(None))
    if decoded.start is None:
        raise InputError(f"could not decode {src.name}: no decodable audio")
    return Measured(loudness.integrated(), peaks.finish(), decoded.start, channels, peaks)


def _output_rate(info: MediaInfo) -> int:
    """The source's sample rate, kept in the output (48 kHz when the container hides it)."""
    return info.sample_rate or WORK_RATE


def _output_codec(info: MediaInfo, suffix: str) -> str:
    """Keep the source codec when we can encode it, so the file stays what the editor sent.

    Audio in a container we do not write (AIFF, CAF, ...) comes back as WAV, which holds
    little-endian PCM only.
    """
    if suffix == ".wav":
        return info.audio_codec if info.audio_codec in _WAV_CODECS else "pcm_s16le"
    fallback = _FALLBACK_CODECS.get(suffix, "aac")
    codec = _ENCODER_NAMES.get(info.audio_codec or "", info.audio_codec or fallback)
    try:
        av.Codec(codec, "w")
    except (av.error.FFmpegError, ValueError):
        return fallback
    return codec


def _normalise(
    src: Path, scratch: BinaryIO, dst: Path, settings: AudioCleanSettings, info: MediaInfo,
    measured: Measured, ticker: ProgressTicker,
) -> tuple[float, float, bool]:
    """Encode with the gain that meets the loudness target under the true-peak ceiling.

    Returns the output's loudness and true peak, and whether it was soft-clipped. Lossless
    output is judged on the limited float signal. Lossy output is decoded and re-measured,
    since the encoder shifts both, and encoded again when that can help
    (``lossy_encode.py``).
    """
    limit = settings.true_peak_db - PEAK_SAFETY_DB
    rate = _output_rate(info)
    codec = _output_codec(info, dst.suffix)
    if codec not in LOSSY_CODECS:
        plan = solve_gain(scratch, measured, rate, settings.loudness_lufs, limit, None, None)
        peak = TruePeakMeter(measured.channels)
        lufs = _pass2(src, scratch, dst, info, codec, None, measured, plan, limit, None, ticker, peak)
        return lufs, peak.peak_db(), plan.clip_db is not None

    bit_rate = output_bit_rate(info.audio_bit_rate, measured.channels)

    def encode(path: Path, plan: GainPlan, ceiling_db: float, lowered: np.ndarray) -> float:
        return _pass2(src, scratch, path, info, codec, bit_rate, measured, plan, ceiling_db, lowered, ticker)

    best = encode_lossy(encode, dst, scratch, measured, rate, settings.loudness_lufs, limit, bit_rate)
    return best.loudness, best.true_peak_db, best.clipped


def _pass2(
    src: Path, scratch: BinaryIO, dst: Path, info: MediaInfo, codec: str, bit_rate: int | None,
    measured: Measured, plan: GainPlan, ceiling_db: float, lowered: np.ndarray | None,
    ticker: ProgressTicker, peak: TruePeakMeter | None = None,
) -> float:
    """Scratch -> gain -> (soft clipper) -> true-peak limiter -> encode -> mux (+ copied video).

    ``codec`` and, for lossy output, ``bit_rate`` are :func:`_normalise`'s choice, made once
    for every encode of the job.

    Returns the loudness of the limited signal as it went to the encoder; ``peak``, if given,
    meters its true peak. Lossless output gives one: that signal is the output. Lossy output
    does not: the decoded file's peak is what counts (``lossy_encode.measure_file``).
    """
    rate = _output_rate(info)
    channels = measured.channels
    loudness = LoudnessMeter(rate, channels)
    with open_input(src) as video_in, av.open(str(dst), "w") as out:
        src_audio = video_in.streams.audio[0]
        layout = layout_name(channels, src_audio)
        a_out = out.add_stream(codec, rate=rate, layout=layout)
        if bit_rate is not None:
            a_out.bit_rate = bit_rate
        elif src_audio.codec_context.format.name in {f.name for f in a_out.codec.audio_formats or []}:
            a_out.format = src_audio.codec_context.format.name  # keep PCM/FLAC bit depth
        a_out.time_base = Fraction(1, rate)
        video_streams = [s for s in video_in.streams.video if info.kind == "video"]
        v_outs = {v.index: copy_stream(out, v) for v in video_streams}
        video_packets = video_in.demux(*video_streams) if video_streams else iter(())
        pending_video = next(video_packets, None)
        written = round(measured.start * rate)

        blocks = scratch_blocks(scratch, channels, int(BLOCK_SECONDS * rate))
        # The encoder (a third of lossy output's time) runs beside the limiter.
        with EncodeMuxer(out, a_out, ticker) as muxer:
            for block in limited(blocks, plan.gain_db, ceiling_db, rate, channels,
                                 plan.clip_db, lowered, peaks=measured.peaks):
                if block.shape[1] == 0:
                    continue
                loudness.update(block)
                if peak is not None:
                    peak.update(block)
                frame = float_frame(block, layout, rate, written)
                written += block.shape[1]
                # Interleave copied video up to this audio time so the muxer never buffers much.
                now = written / rate
                while pending_video is not None and (
                    pending_video.dts is None
                    or float(pending_video.dts * pending_video.time_base) <= now
                ):
                    muxer.put_packet(pending_video, v_outs[pending_video.stream.index])
                    pending_video = next(video_packets, None)
                muxer.put_frame(frame, block.shape[1] * 1000 // rate)
        while pending_video is not None:
            remux_packet(out, pending_video, v_outs[pending_video.stream.index])
            pending_video = next(video_packets, None)
    return loudness.integrated()

