"""Local roto: a soft person matte for every frame, delivered as video with alpha.

The matte comes from MediaPipe's selfie-segmentation TFLite models (see
:mod:`nolly_pipeline.processing.models`) run through OpenCV's DNN module, which needs neither
mediapipe nor TensorFlow (:mod:`nolly_pipeline.processing.matte`). The model works at 256x256 (or 256x144 for wide frames), so the
matte is computed small, smoothed over time, and upsampled (optionally edge-refined against
the full-resolution picture with a guided filter).

Outputs for a video, first one primary:

- ``<stem>_roto.webm`` — VP9 with alpha (``yuva420p``), plays with transparency in browsers.
  Audio is copied when it is Opus or Vorbis, otherwise re-encoded to Opus (all WebM allows).
- ``<stem>_matte.mp4`` — the matte as grey H.264, for editors whose tools ignore alpha.
- ``<stem>_roto.mov`` — ProRes 4444 with alpha (10-bit), only when ``format == "prores"``.

MP4 copies AAC, MP3, AC-3 and ALAC audio and MOV copies anything QuickTime holds
(PCM included); other codecs are re-encoded to AAC. Timestamps are passed through, so frame
count, frame rate and duration match the source. 10-bit or 4:2:2 sources are matted and
delivered as 8-bit 4:2:0 (WebM's limit; the ProRes file is upsampled from that).

A still image gives ``<stem>_cutout.png`` (RGBA) and ``<stem>_matte.png``.

Speed: frames are streamed, never collected, and each output file is encoded on its own
thread (PyAV releases the GIL inside FFmpeg), so VP9 encoding, the matte encoder and the
next frame's decode and inference share the CPU instead of taking turns
(``roto_outputs.py``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from nolly_pipeline.errors import InputError
from nolly_pipeline.processing.base import OutputFile, ProcessingResult, ProgressFn, no_progress
from nolly_pipeline.processing.matte import Matter
from nolly_pipeline.processing.media import MediaInfo, ProgressTicker, open_input, probe
from nolly_pipeline.processing.roto_outputs import Writer, specs
from nolly_pipeline.processing.settings import RotoSettings

# Bump when a change alters what this processor outputs for the same input and settings:
# finished jobs made by an older version then stop being reused for new ones (reuse.py).
PROCESSING_VERSION = "roto/1"

# Frames wider than this use the landscape model: 4:3 is equally far (in log scale) from
# the square model's 1:1 and the landscape model's 16:9.
_LANDSCAPE_MIN_ASPECT = 4 / 3


def roto(
    src: Path,
    out_dir: Path,
    settings: RotoSettings,
    *,
    model_path: Path,
    landscape_model_path: Path | None = None,
    progress: ProgressFn = no_progress,
) -> ProcessingResult:
    """Matte the people in ``src`` (video or still image) and write the outputs to ``out_dir``.

    ``model_path`` is the square selfie model; ``landscape_model_path``, when given, is used
    instead for frames wider than 4:3 (it sees them undistorted).
    Raises :class:`InputError` for audio-only or undecodable input.
    """
    info = probe(src)
    if info.kind == "audio":
        raise InputError("roto needs a video or image, got audio")
    assert info.width and info.height  # probe fills them for video and images
    width, height = (info.height, info.width) if info.rotation % 180 else (info.width, info.height)
    wide = landscape_model_path is not None and width / height > _LANDSCAPE_MIN_ASPECT
    matter = Matter(
        landscape_model_path if wide and landscape_model_path else model_path,
        landscape=wide,
        smoothing=settings.smoothing,
        refine_edges=settings.refine_edges,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    if info.kind == "image":
        return _roto_image(src, out_dir, matter, progress)
    return _roto_video(src, out_dir, info, settings, matter, progress)


def _roto_image(
    src: Path, out_dir: Path, matter: Matter, progress: ProgressFn
) -> ProcessingResult:
    # OpenCV, not FFmpeg, decodes stills: it applies the EXIF orientation phones rely on.
    bgr = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"could not decode {src.name}: unsupported image")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    small = cv2.resize(rgb, matter.input_size, interpolation=cv2.INTER_AREA)
    height, width = bgr.shape[:2]
    guide = None
    if matter.refines:
        guide = cv2.resize(
            bgr, (max(width // 2, 1), max(height // 2, 1)), interpolation=cv2.INTER_AREA
        )
    matte = matter.upsample(matter.infer(small), (width, height), guide)
    cutout_path = out_dir / f"{src.stem}_cutout.png"
    matte_path = out_dir / f"{src.stem}_matte.png"
    if not (
        cv2.imwrite(str(cutout_path), np.dstack([bgr, matte]))
        and cv2.imwrite(str(matte_path), matte)
    ):
        raise OSError(f"could not write roto outputs to {out_dir}")
    progress(1, 1)
    return ProcessingResult(
        files=[
            OutputFile(cutout_path, "cutout", "image/png"),
            OutputFile(matte_path, "matte", "image/png"),
        ],
        metadata={"width": width, "height": height, "frame_count": 1, "model": matter.model_name},
    )


def _plane(plane: Any) -> np.ndarray:
    """A writable uint8 view of a video plane without its row padding."""
    rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]


def _with_alpha(frame: av.VideoFrame, matte: np.ndarray) -> av.VideoFrame:
    """A ``yuva420p`` copy of a ``yuv420p`` frame with ``matte`` as its alpha plane.

    Building the planes directly avoids an RGB round trip (and its colour-matrix guesses).
    """
    out = av.VideoFrame(frame.width, frame.height, "yuva420p")
    for index in range(3):
        _plane(out.planes[index])[:] = _plane(frame.planes[index])
    _plane(out.planes[3])[:] = matte
    out.pts, out.time_base = frame.pts, frame.time_base
    out.colorspace, out.color_range = frame.colorspace, frame.color_range
    return out


def _grey(frame: av.VideoFrame, matte: np.ndarray) -> av.VideoFrame:
    out = av.VideoFrame.from_ndarray(matte, format="gray")
    out.pts, out.time_base = frame.pts, frame.time_base
    return out


def _roto_video(
    src: Path,
    out_dir: Path,
    info: MediaInfo,
    settings: RotoSettings,
    matter: Matter,
    progress: ProgressFn,
) -> ProcessingResult:
    ticker = ProgressTicker(progress, info.frame_count or 0)
    model_w, model_h = matter.input_size
    started = time.monotonic()
    writers: list[Writer] = []
    with open_input(src) as container:
        video_in = container.streams.video[0]
        video_in.thread_type = "AUTO"
        audio_in = container.streams.audio[0] if container.streams.audio else None
        try:
            for spec in specs(src, out_dir, settings):  # one by one, so a failure aborts the rest
                writers.append(Writer(spec, video_in, audio_in, info.rotation))
            encoders = [w for w in writers if not w.copies_audio]
            copiers = [w for w in writers if w.copies_audio]
            streams = [s for s in (video_in, audio_in) if s is not None]
            # demux() ends with an empty packet per stream, whose decode() drains the decoder.
            for packet in container.demux(*streams):
                if packet.stream is video_in:
                    for frame in packet.decode():
                        _process_frame(frame, matter, model_w, model_h, info.rotation, writers)
                        ticker.advance()
                    continue
                for writer in copiers:
                    writer.put(packet)
                if encoders:
                    for audio_frame in packet.decode():
                        for writer in encoders:
                            writer.put(audio_frame)
            for writer in writers:
                writer.finish()
        except BaseException:
            for writer in writers:
                writer.abort()
            raise
    ticker.finish()
    elapsed = time.monotonic() - started
    rate = video_in.average_rate or video_in.guessed_rate
    return ProcessingResult(
        files=[OutputFile(w.spec.path, w.spec.role, w.spec.content_type) for w in writers],
        metadata={
            "width": info.width,
            "height": info.height,
            "fps": float(rate) if rate else None,
            "frame_count": ticker.done,
            "duration": info.duration,
            "has_audio": audio_in is not None,
            "model": matter.model_name,
            "processing_fps": round(ticker.done / elapsed, 2) if elapsed > 0 else None,
        },
    )


def _process_frame(
    frame: av.VideoFrame, matter: Matter, model_w: int, model_h: int, rotation: int,
    writers: list[Writer],
) -> None:
    """Matte one frame; the model sees it upright, as the player will show it.

    A phone's portrait clip is stored as landscape frames plus a display rotation (degrees
    counter-clockwise), and the selfie model finds people lying on their side poorly.
    """
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    turns = rotation // 90 % 4
    stored_w, stored_h = (model_h, model_w) if turns % 2 else (model_w, model_h)
    small = frame.to_ndarray(width=stored_w, height=stored_h, format="rgb24", interpolation="AREA")
    upright = np.ascontiguousarray(np.rot90(small, turns))
    matte_small = np.ascontiguousarray(np.rot90(matter.smooth(upright, matter.infer(upright)), -turns))
    matte = matter.upsample(
        matte_small, (frame.width, frame.height), _yuv_guide(frame) if matter.refines else None
    )
    # One alpha frame serves WebM and ProRes: encoders only read it (ProRes via a converted copy).
    with_alpha = _with_alpha(frame, matte)
    for writer in writers:
        writer.put(_grey(frame, matte) if writer.spec.role == "matte" else with_alpha)


def _yuv_guide(frame: av.VideoFrame) -> np.ndarray:
    """Y, U, V at chroma resolution: a half-size colour guide without any conversion."""
    u, v = _plane(frame.planes[1]), _plane(frame.planes[2])
    y = cv2.resize(_plane(frame.planes[0]), (u.shape[1], u.shape[0]), interpolation=cv2.INTER_AREA)
    return np.dstack([y, u, v])
