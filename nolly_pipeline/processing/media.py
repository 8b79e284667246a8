"""Probing media files and the PyAV helpers every local processor shares.

Public API (stable; the roto processor builds on it):

- :class:`MediaInfo` and :func:`probe` — what a file is (video, audio or still image), its
  geometry, rate, length and audio layout, after checking that it actually decodes.
- :func:`open_input` — open a file for reading; any FFmpeg failure becomes an
  :class:`~nolly_pipeline.errors.InputError` whose message is safe to show the editor.
- :func:`decode_error` — build that same error from an exception caught mid-stream.
- :func:`copy_stream` / :func:`remux_packet` — pass a stream through without re-encoding.
- :class:`ProgressTicker` — throttle progress callbacks to about one per percent.

Why probe decodes a frame: many broken uploads (truncated, mislabelled, zero-filled) still
open and report plausible headers; only decoding tells them apart, and failing at probe time
gives the editor one clear sentence instead of a failure deep inside a long encode.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Literal

import av
import av.container
import av.error
import av.stream

from nolly_pipeline.errors import InputError
from nolly_pipeline.processing.base import ProgressFn

MediaKind = Literal["video", "audio", "image"]

# Demuxers FFmpeg uses for single still images; a video stream from one of these is a picture.
_IMAGE_DEMUXERS = {"image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe"}


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` found. Video fields are ``None`` for audio and vice versa."""

    kind: MediaKind
    format_name: str  # FFmpeg demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "wav", "png_pipe"
    duration: float  # seconds; 0.0 for a still image
    width: int | None = None
    height: int | None = None
    fps: Fraction | None = None  # average frame rate
    frame_count: int | None = None  # from the container index, or estimated from duration*fps
    video_codec: str | None = None  # codec (not decoder) name: "h264", "png", "mjpeg"
    rotation: int = 0  # display rotation in degrees (phones film portrait as rotated landscape)
    has_audio: bool = False
    sample_rate: int | None = None
    channels: int | None = None
    audio_codec: str | None = None  # "aac", "mp3", "pcm_s16le", ...
    audio_bit_rate: int | None = None  # bit/s as the stream reports it (often an average)


def decode_error(path: Path, exc: BaseException | str) -> InputError:
    """An :class:`InputError` for a file FFmpeg cannot read, without paths or tracebacks.

    FFmpeg error strings often embed the full path ("...: '/tmp/x/in.mp4'"); only the
    reason part is kept, because the message goes straight to the editor.
    """
    if isinstance(exc, av.error.FFmpegError):
        reason = exc.strerror or type(exc).__name__
    else:
        reason = str(exc)
    reason = reason.replace(str(path), path.name).strip() or "unknown error"
    return InputError(f"could not decode {path.name}: {reason}")


# Bytes FFmpeg may read while opening a WAV file. Its WAV demuxer scans up to the probe size
# (5 MB by default) for S/PDIF-wrapped AC-3/DTS in 16-bit PCM: ~25-80 ms of CPU per open here
# for 0.5-1 MB of audio, against ~1 ms with this limit, and a job opens its files about 9 times.
# A WAV's streams and duration come from its header, so nothing else changes (an S/PDIF frame
# is at most 6144 bytes: one is still seen). Other formats keep FFmpeg's default: raw AAC or
# MP3 estimate their duration from the bytes probed.
_WAV_PROBE_SIZE = 8192


def _open_options(path: Path) -> dict[str, str]:
    """FFmpeg demuxer options for opening ``path`` (a small probe size for WAV, see above)."""
    try:
        with open(path, "rb") as file:
            head = file.read(12)
    except OSError:
        return {}  # av.open reports it
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return {"probesize": str(_WAV_PROBE_SIZE)}
    return {}


@contextlib.contextmanager
def open_input(path: Path) -> Iterator[av.container.InputContainer]:
    """Open ``path`` for reading; FFmpeg errors while open or inside the block become InputError."""
    try:
        container = av.open(str(path), mode="r", options=_open_options(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise decode_error(path, exc) from None
    try:
        yield container
    except av.error.FFmpegError as exc:
        raise decode_error(path, exc) from None
    finally:
        container.close()


def probe(path: Path) -> MediaInfo:
    """Describe ``path`` and prove it decodes (first frame of its main stream).

    Raises :class:`InputError` ``"could not decode <name>: <reason>"`` for corrupt, truncated,
    empty or non-media files.
    """
    if not path.is_file() or path.stat().st_size == 0:
        raise InputError(f"could not decode {path.name}: file is empty or missing")
    with open_input(path) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            raise InputError(f"could not decode {path.name}: no audio or video stream")
        main = video if video is not None else audio
        first = next(container.decode(main), None)
        if first is None:
            raise InputError(f"could not decode {path.name}: no decodable frames")
        rotation = round(first.rotation) if video is not None else 0
        format_name = container.format.name
        duration = stream_duration(container, main)

    audio_fields: dict = {}
    if audio is not None:
        audio_fields = {
            "has_audio": True,
            "sample_rate": audio.codec_context.sample_rate,
            "channels": audio.codec_context.channels,
            "audio_codec": audio.codec_context.codec.canonical_name,
            "audio_bit_rate": audio.codec_context.bit_rate or None,
        }
    if video is None:
        return MediaInfo(kind="audio", format_name=format_name, duration=duration, **audio_fields)

    is_image = format_name in _IMAGE_DEMUXERS
    fps = None if is_image else _frame_rate(video)
    return MediaInfo(
        kind="image" if is_image else "video",
        format_name=format_name,
        duration=0.0 if is_image else duration,
        width=video.codec_context.width,
        height=video.codec_context.height,
        fps=fps,
        frame_count=1 if is_image else _frame_count(video, duration, fps),
        video_codec=video.codec_context.codec.canonical_name,
        rotation=0 if is_image else rotation,
        **audio_fields,
    )


def stream_duration(container: av.container.InputContainer, stream: av.stream.Stream) -> float:
    """Seconds of ``stream`` as its container declares them (the stream's own, else the file's)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def _frame_rate(stream: av.stream.Stream) -> Fraction | None:
    rate = stream.average_rate or stream.guessed_rate
    return Fraction(rate) if rate else None


def _frame_count(stream: av.stream.Stream, duration: float, fps: Fraction | None) -> int:
    # MP4/MOV index every sample, so `frames` is exact; Matroska and raw streams leave it 0.
    if stream.frames:
        return stream.frames
    return round(duration * fps) if fps else 0


def copy_stream(
    output: av.container.OutputContainer, template: av.stream.Stream
) -> av.stream.Stream:
    """Add an output stream that receives ``template``'s packets unchanged (no re-encode).

    Raises InputError when the output container cannot hold that codec (e.g. PCM into MP4),
    since that is a property of the uploaded file the editor can act on.
    """
    codec = template.codec_context.name
    if codec not in output.supported_codecs:
        raise InputError(
            f"the {template.type} codec {codec} cannot be stored in {output.format.name}"
        )
    return output.add_stream_from_template(template)


def keep_rotation(stream: av.stream.Stream, degrees: int) -> None:
    """Tag a re-encoded video stream with the source's display rotation.

    Frames are decoded as stored; without the tag a phone's portrait clip would come back
    lying on its side. Call before the first packet is muxed.
    """
    if degrees:
        stream.set_display_rotation(degrees)


def remux_packet(
    output: av.container.OutputContainer, packet: av.Packet, stream: av.stream.Stream
) -> None:
    """Write a demuxed packet to ``stream``; flush packets (no dts) carry nothing to copy."""
    if packet.dts is None:
        return
    packet.stream = stream
    output.mux(packet)


class ProgressTicker:
    """Forward progress roughly every 1% so a per-frame loop does not flood the job row."""

    def __init__(self, progress: ProgressFn, total: int) -> None:
        self._progress = progress
        self.total = max(total, 1)
        self._step = max(self.total // 100, 1)
        self.done = 0

    def advance(self, count: int = 1) -> None:
        before = self.done // self._step
        self.done += count
        if self.done // self._step != before:
            self._progress(min(self.done, self.total), self.total)

    def finish(self) -> None:
        """Report completion; the real count may differ from the estimate the total came from."""
        self.total = max(self.done, 1)
        self._progress(self.total, self.total)
