"""The output files of local roto: what each one encodes, and a thread that writes each.

Split from ``roto.py``, which decodes, mattes and feeds frames: here is only how a file is
encoded and muxed. Each :class:`Writer` owns one container on its own thread (PyAV releases
the GIL inside FFmpeg), so the outputs' encoders run beside the next frame's inference.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.stream

from nolly_pipeline.processing.media import copy_stream, keep_rotation, remux_packet
from nolly_pipeline.processing.settings import RotoSettings

# Bounded queues keep memory flat: at most this many frames wait per output.
_QUEUE_FRAMES = 8


@dataclass(frozen=True)
class VideoSpec:
    """How one output encodes video, and what it does with the source audio."""

    path: Path
    role: str
    content_type: str
    codec: str
    pix_fmt: str
    options: dict[str, str]
    audio_fallback: str  # encoder used when the source audio codec cannot be copied
    audio_copyable: frozenset[str] | None = None  # None: anything the container accepts


def specs(src: Path, out_dir: Path, settings: RotoSettings) -> list[VideoSpec]:
    specs = [
        VideoSpec(
            out_dir / f"{src.stem}_roto.webm", "video", "video/webm",
            "libvpx-vp9", "yuva420p",
            # Realtime deadline with row multithreading: about 3x faster than "good" at 1080p,
            # and constant quality (crf, b=0) keeps the alpha plane's edges clean.
            {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "tile-columns": "2",
             "crf": "30", "b": "0"},
            audio_fallback="libopus",
            audio_copyable=frozenset({"opus", "vorbis"}),
        ),
        VideoSpec(
            out_dir / f"{src.stem}_matte.mp4", "matte", "video/mp4",
            "libx264", "yuv420p",
            {"preset": "ultrafast", "crf": "16", "movflags": "+faststart"},
            audio_fallback="aac",
            # What browsers and editors play from MP4; PCM (legal in MP4) mostly is not.
            audio_copyable=frozenset({"aac", "mp3", "ac3", "eac3", "alac"}),
        ),
    ]  # fmt: skip
    if settings.format == "prores":
        specs.append(
            VideoSpec(
                out_dir / f"{src.stem}_roto.mov", "prores", "video/quicktime",
                # prores_aw, not prores_ks: with frame threads it encodes 4444+alpha about 6x
                # faster here (18 vs 3 fps at 1080p) and writes the same ap4h stream.
                "prores_aw", "yuva444p10le",
                {"vendor": "apl0"},  # profile follows the pixel format: ap4h (4444)
                audio_fallback="aac",
            )
        )  # fmt: skip
    return specs


class Writer:
    """One output file, encoded and muxed on its own thread.

    Everything that touches the container (video frames, copied audio packets, decoded audio
    frames) goes through one queue, so the muxer sees them in demux order and no two threads
    share FFmpeg state.
    """

    _FINISH = object()

    def __init__(
        self, spec: VideoSpec, video_in: av.stream.Stream, audio_in: av.stream.Stream | None,
        rotation: int,
    ) -> None:
        self.spec = spec
        self._container = av.open(str(spec.path), mode="w", options=_muxer_options(spec))
        rate = video_in.average_rate or video_in.guessed_rate
        self._video = self._container.add_stream(
            spec.codec, rate=rate, time_base=video_in.time_base, options=_codec_options(spec)
        )
        decoder = video_in.codec_context
        ctx = self._video.codec_context
        ctx.width, ctx.height, ctx.pix_fmt = decoder.width, decoder.height, spec.pix_fmt
        # FFmpeg's frame threads matter for ProRes; libvpx and x264 take the count as their own.
        ctx.thread_count, ctx.thread_type = 2, "FRAME"
        if decoder.sample_aspect_ratio:  # anamorphic sources keep their pixel shape
            ctx.sample_aspect_ratio = decoder.sample_aspect_ratio
        keep_rotation(self._video, rotation)
        if spec.role != "matte":  # the grey matte is not a picture: leave it untagged
            ctx.colorspace, ctx.color_range = decoder.colorspace, decoder.color_range
            ctx.color_primaries, ctx.color_trc = decoder.color_primaries, decoder.color_trc
        self.copies_audio = False
        self._audio: av.stream.Stream | None = None
        if audio_in is not None:
            self._add_audio(audio_in)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_FRAMES)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"roto-{spec.role}", daemon=True)
        self._thread.start()

    def _add_audio(self, audio_in: av.stream.Stream) -> None:
        codec = audio_in.codec_context.name
        allowed = self.spec.audio_copyable
        if codec in self._container.supported_codecs and (allowed is None or codec in allowed):
            self._audio = copy_stream(self._container, audio_in)
            self.copies_audio = True
            return
        decoder = audio_in.codec_context
        # Opus only takes 48 kHz (and is what WebM players expect); AAC keeps the source rate.
        # PyAV resamples decoded frames to the encoder's format, layout and frame size itself.
        rate = 48000 if self.spec.audio_fallback == "libopus" else decoder.sample_rate
        self._audio = self._container.add_stream(self.spec.audio_fallback, rate=rate)
        self._audio.codec_context.layout = (
            decoder.layout.name if decoder.channels <= 2 else "stereo"
        )

    def put(self, item: Any) -> None:
        """Queue a VideoFrame, an audio Packet (copy) or an AudioFrame (encode)."""
        if self.error is not None:
            raise RuntimeError(f"encoding {self.spec.path.name} failed") from self.error
        self._queue.put(item)

    def finish(self) -> None:
        """Flush the encoders, close the file and surface any error from the thread."""
        self._queue.put(self._FINISH)
        self._thread.join()
        if self.error is not None:
            raise RuntimeError(f"encoding {self.spec.path.name} failed") from self.error

    def abort(self) -> None:
        """Stop without flushing (the job failed elsewhere); the partial file is discarded."""
        if self._thread.is_alive():
            self.error = self.error or RuntimeError("aborted")
            self._queue.put(self._FINISH)
            self._thread.join()

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not self._FINISH:
                if self.error is None:  # after a failure keep draining so put() never blocks
                    self._write(item)
            if self.error is None:
                self._container.mux(self._video.encode(None))
                if self._audio is not None and not self.copies_audio:
                    self._container.mux(self._audio.encode(None))
        except BaseException as exc:  # noqa: BLE001 - handed to the producer thread
            self.error = exc
            while self._queue.get() is not self._FINISH:
                pass
        finally:
            self._container.close()

    def _write(self, item: Any) -> None:
        if isinstance(item, av.VideoFrame):
            self._container.mux(self._video.encode(item))
        elif isinstance(item, av.Packet):
            remux_packet(self._container, item, self._audio)
        else:
            self._container.mux(self._audio.encode(item))


def _codec_options(spec: VideoSpec) -> dict[str, str]:
    return {k: v for k, v in spec.options.items() if k != "movflags"}


def _muxer_options(spec: VideoSpec) -> dict[str, str]:
    return {k: v for k, v in spec.options.items() if k == "movflags"}
