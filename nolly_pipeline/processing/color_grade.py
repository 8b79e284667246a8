"""Colour grading: one baked 3D LUT applied by FFmpeg's ``lut3d`` while streaming frames.

Every control (look preset or uploaded ``.cube``, exposure, white balance, contrast,
saturation, intensity) is a pure per-pixel colour function, so they compose into a single
33x33x33 LUT. Baking them means the per-frame cost is one tetrahedral lookup in FFmpeg's
threaded C filter no matter how many controls are set, and the baked ``.cube`` is returned
as a secondary output so an editor can reproduce the grade in Resolve or Premiere.

Video is decoded, filtered and encoded frame by frame (memory does not grow with length);
audio packets are copied untouched. Still PNG/JPEG images go through the same LUT.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import av.error
import av.filter
import numpy as np

from nolly_pipeline.errors import InputError, PermanentError
from nolly_pipeline.processing.base import OutputFile, ProcessingResult, ProgressFn, no_progress
from nolly_pipeline.processing.media import (
    MediaInfo,
    ProgressTicker,
    copy_stream,
    decode_error,
    keep_rotation,
    open_input,
    probe,
)
from nolly_pipeline.processing.muxer import EncodeMuxer
from nolly_pipeline.processing.settings import ColorGradeSettings

# Bump when a change alters what this processor outputs for the same input and settings:
# finished jobs made by an older version then stop being reused for new ones (reuse.py).
PROCESSING_VERSION = "color-grade/1"

LUT_SIZE = 33
_IMAGE_CODECS = {"png": ("png", "image/png"), "mjpeg": ("mjpeg", "image/jpeg")}
# Rec. 709 luma weights: the same "brightness" the eye and the broadcast matrices use.
_LUMA = np.array([0.2126, 0.7152, 0.0722])
_GAMMA = 2.2  # display encoding approximated as a pure power; exposure/WB work in linear light


# --------------------------------------------------------------------------- colour math
# All functions take and return float arrays of shape (..., 3) holding display RGB in 0..1.


def _luma(rgb: np.ndarray) -> np.ndarray:
    return (rgb @ _LUMA)[..., None]


def _white_balance(rgb: np.ndarray, exposure: float, temperature: float, tint: float) -> np.ndarray:
    """Exposure and channel gains in linear light, where light actually adds and scales."""
    gains = 2.0 ** (exposure + 0.3 * np.array([temperature, -tint, -temperature]))
    linear = np.clip(rgb, 0.0, 1.0) ** _GAMMA * gains
    return np.clip(linear, 0.0, 1.0) ** (1.0 / _GAMMA)


def _contrast(rgb: np.ndarray, amount: float) -> np.ndarray:
    return np.clip(0.5 + (rgb - 0.5) * amount, 0.0, 1.0)


def _saturation(rgb: np.ndarray, amount: float) -> np.ndarray:
    luma = _luma(rgb)
    return np.clip(luma + (rgb - luma) * amount, 0.0, 1.0)


def _s_curve(x: np.ndarray, strength: float) -> np.ndarray:
    """Filmic contrast that rolls off instead of clipping: blend towards smoothstep."""
    return x + (x * x * (3.0 - 2.0 * x) - x) * strength


def _preset_warm(rgb: np.ndarray) -> np.ndarray:
    return _saturation(_white_balance(rgb, 0.0, 0.35, 0.05), 1.05)


def _preset_cool(rgb: np.ndarray) -> np.ndarray:
    return _saturation(_white_balance(rgb, 0.0, -0.35, -0.03), 0.95)


def _preset_teal_orange(rgb: np.ndarray) -> np.ndarray:
    """Split toning: shadows towards teal, highlights (and skin) towards orange."""
    luma = _luma(rgb)
    teal = np.array([-0.55, 0.10, 0.45])
    orange = np.array([0.45, 0.05, -0.50])
    toned = rgb + 0.12 * (1.0 - luma) ** 1.5 * teal + 0.10 * luma**1.5 * orange
    return _saturation(_s_curve(np.clip(toned, 0.0, 1.0), 0.25), 1.15)


def _preset_noir(rgb: np.ndarray) -> np.ndarray:
    grey = np.repeat(_luma(rgb), 3, axis=-1)
    return np.clip(_s_curve(grey, 0.6) * 0.97, 0.0, 1.0)


def _preset_bleach_bypass(rgb: np.ndarray) -> np.ndarray:
    """Silver retained: a luma overlay over the colour gives crushed, desaturated contrast."""
    luma = _luma(rgb)
    overlay = np.where(luma < 0.5, 2.0 * rgb * luma, 1.0 - 2.0 * (1.0 - rgb) * (1.0 - luma))
    return _saturation(_s_curve(np.clip(overlay, 0.0, 1.0), 0.2), 0.55)


PRESETS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "warm": _preset_warm,
    "cool": _preset_cool,
    "teal-orange": _preset_teal_orange,
    "noir": _preset_noir,
    "bleach-bypass": _preset_bleach_bypass,
}


# --------------------------------------------------------------------------- .cube files


def identity_grid(size: int = LUT_SIZE) -> np.ndarray:
    """RGB coordinates of a ``size``^3 lattice, shape (size, size, size, 3), indexed [b, g, r].

    The [b, g, r] order makes a C-order flatten match the .cube convention (red fastest).
    """
    axis = np.linspace(0.0, 1.0, size)
    b, g, r = np.meshgrid(axis, axis, axis, indexing="ij")
    return np.stack([r, g, b], axis=-1)


def read_cube(path: Path) -> np.ndarray:
    """Parse a 3D ``.cube`` LUT into a table indexed [b, g, r] (see :func:`identity_grid`).

    Input domain (DOMAIN_MIN/MAX) is normalised to 0..1 so the table can be sampled directly.
    """
    size = None
    domain_min, domain_max = np.zeros(3), np.ones(3)
    rows: list[list[float]] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"could not read LUT file: {exc.strerror}") from None
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        key = parts[0].upper()
        try:
            if key == "LUT_3D_SIZE":
                size = int(parts[1])
            elif key == "DOMAIN_MIN":
                domain_min = np.array([float(v) for v in parts[1:4]])
            elif key == "DOMAIN_MAX":
                domain_max = np.array([float(v) for v in parts[1:4]])
            elif key == "LUT_1D_SIZE":
                raise InputError("LUT file is a 1D LUT; a 3D .cube LUT is required")
            elif key[0].isdigit() or key[0] in "-+.":
                rows.append([float(v) for v in parts[:3]])
        except (ValueError, IndexError):
            raise InputError(f"LUT file has an unreadable line: {line.strip()[:60]!r}") from None
    if size is None or not 2 <= size <= 256:
        raise InputError("LUT file has no valid LUT_3D_SIZE")
    table = np.asarray(rows, dtype=np.float64)
    if table.shape != (size**3, 3):
        raise InputError(f"LUT file has {len(rows)} entries, expected {size**3} for size {size}")
    if np.any(domain_max <= domain_min):
        raise InputError("LUT file has DOMAIN_MAX not above DOMAIN_MIN")
    table = table.reshape(size, size, size, 3)
    if np.any(domain_min != 0.0) or np.any(domain_max != 1.0):
        table = _resample_domain(table, domain_min, domain_max)
    return table


def _resample_domain(table: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Re-express a LUT defined over [lo, hi] on the 0..1 lattice the rest of the code uses."""
    grid = identity_grid(table.shape[0])
    return sample_lut(table, (grid - lo) / (hi - lo))


def sample_lut(table: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Trilinear lookup of ``rgb`` (..., 3) in ``table`` (indexed [b, g, r]); inputs clamp to 0..1."""
    size = table.shape[0]
    pos = np.clip(rgb, 0.0, 1.0) * (size - 1)
    base = np.minimum(np.floor(pos).astype(np.intp), size - 2)
    frac = pos - base
    r0, g0, b0 = base[..., 0], base[..., 1], base[..., 2]
    fr, fg, fb = frac[..., 0:1], frac[..., 1:2], frac[..., 2:3]
    out = np.zeros(rgb.shape, dtype=np.float64)
    for db, wb in ((0, 1.0 - fb), (1, fb)):
        for dg, wg in ((0, 1.0 - fg), (1, fg)):
            for dr, wr in ((0, 1.0 - fr), (1, fr)):
                out += wb * wg * wr * table[b0 + db, g0 + dg, r0 + dr]
    return out


def write_cube(table: np.ndarray, path: Path, title: str) -> None:
    size = table.shape[0]
    with path.open("w", encoding="ascii") as fh:
        fh.write(f'TITLE "{title}"\nLUT_3D_SIZE {size}\nDOMAIN_MIN 0 0 0\nDOMAIN_MAX 1 1 1\n')
        np.savetxt(fh, table.reshape(-1, 3), fmt="%.6f")


def build_lut(
    settings: ColorGradeSettings, user_lut: np.ndarray | None = None, size: int = LUT_SIZE
) -> np.ndarray:
    """Bake every control into one table indexed [b, g, r].

    Order follows a colourist's node tree: primaries (exposure, white balance, contrast,
    saturation) correct the footage, then the creative look, then ``intensity`` mixes the
    result back with the untouched source.
    """
    source = identity_grid(size)
    rgb = _white_balance(source, settings.exposure, settings.temperature, settings.tint)
    rgb = _saturation(_contrast(rgb, settings.contrast), settings.saturation)
    if settings.preset is not None:
        rgb = PRESETS[settings.preset](rgb)
    if user_lut is not None:
        rgb = sample_lut(user_lut, rgb)
    rgb = source + settings.intensity * (rgb - source)
    return np.clip(rgb, 0.0, 1.0)


# --------------------------------------------------------------------------- processing


def color_grade(
    src: Path,
    out_dir: Path,
    settings: ColorGradeSettings,
    *,
    lut_path: Path | None = None,
    progress: ProgressFn = no_progress,
) -> ProcessingResult:
    """Grade a video (→ H.264 MP4, audio copied) or a PNG/JPEG still (→ same format).

    ``lut_path`` is the local copy of ``settings.lut_url`` that the pipeline downloaded.
    """
    if settings.lut_url and lut_path is None:
        raise PermanentError("lut_url is set but the LUT file was not downloaded")
    info = probe(src)
    if info.kind == "audio":
        raise InputError(f"{src.name} has no picture to colour grade")
    user_lut = read_cube(lut_path) if lut_path is not None else None

    out_dir.mkdir(parents=True, exist_ok=True)
    cube_path = out_dir / f"{src.stem}_grade.cube"
    write_cube(build_lut(settings, user_lut), cube_path, title=f"nolly grade for {src.stem}")
    lut_file = OutputFile(path=cube_path, role="lut", content_type="text/plain")

    if info.kind == "image":
        image = _grade_image(src, out_dir, cube_path, info)
        progress(1, 1)
        return ProcessingResult(files=[image, lut_file], metadata=_metadata(info, 1))

    video_path = out_dir / f"{src.stem}_graded.mp4"
    frames = _grade_video(src, video_path, cube_path, settings, info, progress)
    video = OutputFile(path=video_path, role="video", content_type="video/mp4")
    return ProcessingResult(files=[video, lut_file], metadata=_metadata(info, frames))


def _metadata(info: MediaInfo, frames: int) -> dict:
    return {
        "width": info.width,
        "height": info.height,
        "fps": str(info.fps) if info.fps else None,
        "frames": frames,
        "duration": info.duration,
        "lut_size": LUT_SIZE,
    }


def _lut_graph(
    cube_path: Path, out_pix_fmt: str, *, template=None, width=0, height=0, in_fmt=None, time_base=None
) -> av.filter.Graph:
    """buffer -> lut3d -> format -> sink, the same chain as ``ffmpeg -vf lut3d=...,format=...``.

    Options go in as keywords (not an args string) so paths need no filter-graph escaping.
    """
    graph = av.filter.Graph()
    if template is not None:
        source = graph.add_buffer(template=template)
    else:
        source = graph.add_buffer(width=width, height=height, format=in_fmt, time_base=time_base)
    lut = graph.add("lut3d", file=str(cube_path))
    fmt = graph.add("format", pix_fmts=out_pix_fmt)
    sink = graph.add("buffersink")
    source.link_to(lut)
    lut.link_to(fmt)
    fmt.link_to(sink)
    graph.configure()
    return graph


def _drain(graph: av.filter.Graph) -> list[av.VideoFrame]:
    frames = []
    while True:
        try:
            frames.append(graph.vpull())
        except (av.error.BlockingIOError, av.error.EOFError):
            return frames


def _grade_video(
    src: Path,
    dst: Path,
    cube_path: Path,
    settings: ColorGradeSettings,
    info: MediaInfo,
    progress: ProgressFn,
) -> int:
    ticker = ProgressTicker(progress, info.frame_count or 0)
    with open_input(src) as inp, av.open(str(dst), mode="w", format="mp4") as out:
        v_in = inp.streams.video[0]
        v_in.thread_type = "AUTO"
        a_ins = list(inp.streams.audio)
        v_out = out.add_stream("libx264", rate=v_in.average_rate or Fraction(info.fps or 25))
        v_out.width, v_out.height = v_in.codec_context.width, v_in.codec_context.height
        v_out.pix_fmt = "yuv420p"
        v_out.time_base = v_in.time_base
        v_out.codec_context.time_base = v_in.time_base
        v_out.options = {"crf": str(settings.crf), "preset": settings.x264_preset}
        if v_in.sample_aspect_ratio:
            v_out.codec_context.sample_aspect_ratio = v_in.sample_aspect_ratio
        keep_rotation(v_out, info.rotation)
        a_outs = {a.index: copy_stream(out, a) for a in a_ins}
        graph = _lut_graph(cube_path, "yuv420p", template=v_in)

        # Encoding overlaps with decode + lut3d; audio packets go through the same thread.
        with EncodeMuxer(out, v_out, ticker) as muxer:
            for packet in inp.demux(v_in, *a_ins):
                if packet.stream.index in a_outs:
                    muxer.put_packet(packet, a_outs[packet.stream.index])
                    continue
                for frame in packet.decode():
                    graph.vpush(frame)
                    for graded in _drain(graph):
                        muxer.put_frame(graded)
            graph.vpush(None)
            for graded in _drain(graph):
                muxer.put_frame(graded)
    if ticker.done == 0:
        raise InputError(f"could not decode {src.name}: no decodable frames")
    ticker.finish()
    return ticker.done


def _grade_image(src: Path, out_dir: Path, cube_path: Path, info: MediaInfo) -> OutputFile:
    """Still PNG/JPEG: decode, one LUT pass, re-encode in the source's own format."""
    if info.video_codec not in _IMAGE_CODECS:
        raise InputError(f"{src.name}: only PNG and JPEG stills can be graded")
    codec_name, content_type = _IMAGE_CODECS[info.video_codec]
    with open_input(src) as inp:
        frame = next(inp.decode(video=0))
    if codec_name == "png":
        # Keep transparency if the source had it; lut3d passes alpha through untouched.
        has_alpha = any(c.is_alpha for c in frame.format.components)
        out_fmt = "rgba" if has_alpha else "rgb24"
    else:
        out_fmt = "yuvj444p" if frame.format.name in ("yuvj444p", "yuv444p") else "yuvj420p"
    try:
        graph = _lut_graph(
            cube_path, out_fmt, width=frame.width, height=frame.height,
            in_fmt=frame.format.name, time_base=Fraction(1, 1),
        )
        frame.pts = 0
        frame.time_base = Fraction(1, 1)
        graph.vpush(frame)
        graded = graph.vpull()
        encoder = av.CodecContext.create(codec_name, "w")
        encoder.width, encoder.height, encoder.pix_fmt = frame.width, frame.height, out_fmt
        encoder.time_base = Fraction(1, 1)
        if codec_name == "mjpeg":
            encoder.color_range = 2  # full range (JPEG)
            encoder.qmin = encoder.qmax = 2  # near-transparent quality; stills are small
        data = b"".join(bytes(p) for p in [*encoder.encode(graded), *encoder.encode(None)])
    except av.error.FFmpegError as exc:
        raise decode_error(src, exc) from None
    dst = out_dir / f"{src.stem}_graded{src.suffix.lower() or '.' + codec_name}"
    dst.write_bytes(data)
    return OutputFile(path=dst, role="image", content_type=content_type)
