"""Small PNG previews of a finished job, for the Dagster UI and the frontend's thumbnail.

* colour grade: the same moment before and after, side by side;
* roto: the matte over the picture (background dimmed and tinted) next to the matte itself;
* audio clean-up: the waveform before (top) and after (bottom) on one scale.

Pure media code (PyAV, numpy, OpenCV, imported inside the functions so the code location
does not pay for them). A preview is at most :data:`WIDTH` px wide and is shrunk until its
PNG fits :data:`MAX_BYTES`, which keeps its data URL well under the ~150 KB the UI handles
comfortably.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from nolly_pipeline.processing.base import OutputFile

WIDTH = 480
MAX_BYTES = 100_000  # PNG bytes; base64 makes the data URL 4/3 of this
_WAVE_HEIGHT = 90
_LABEL_COLOUR = (255, 255, 255)


def render_preview(job_type: str, source: Path, outputs: Sequence[OutputFile], dest: Path) -> OutputFile:
    """Write the preview of one job to ``dest`` (a ``.png``) and describe it as an output file."""
    primary = next(f for f in outputs if f.role not in ("lut", "preview"))
    if job_type == "color-grade":
        image = _side_by_side([(_still(source), "before"), (_still(primary.path), "after")])
    elif job_type == "roto":
        matte_file = next((f for f in outputs if f.role == "matte"), primary)
        image = _matte_over_picture(_still(source), _matte(matte_file.path))
    elif job_type == "audio-clean":
        image = _waveforms(source, primary.path)
    else:
        raise ValueError(f"no preview for job type {job_type!r}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(encode_png(image))
    return OutputFile(path=dest, role="preview", content_type="image/png")


def encode_png(bgr: Any, max_bytes: int = MAX_BYTES) -> bytes:
    """PNG of ``bgr``, scaled down by 3/4 at a time until it fits ``max_bytes``."""
    import cv2

    image = bgr
    while True:
        ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        if not ok:
            raise ValueError("PNG encoding failed")
        if len(data) <= max_bytes or image.shape[1] <= 64:
            return data.tobytes()
        image = cv2.resize(image, (image.shape[1] * 3 // 4, max(image.shape[0] * 3 // 4, 1)),
                           interpolation=cv2.INTER_AREA)


# --------------------------------------------------------------------------- pictures


def _middle(path: Path, image_flag: int, from_frame: Callable[[Any], Any]) -> Any:
    """The picture at the middle of a video (converted by ``from_frame``), or the image itself."""
    import cv2

    from nolly_pipeline.processing.checks import frame_at
    from nolly_pipeline.processing.media import probe

    info = probe(path)
    if info.kind != "image":
        return from_frame(frame_at(path, info.duration / 2))
    image = cv2.imread(str(path), image_flag)
    if image is None:
        raise ValueError(f"could not read {path.name}")
    return image


def _still(path: Path) -> Any:
    """A BGR picture from the middle of a video, or the image itself."""
    import cv2

    return _middle(path, cv2.IMREAD_COLOR, lambda frame: frame.to_ndarray(format="bgr24"))


def _matte(path: Path) -> Any:
    """The matte (uint8, 255 = keep) at the middle of a matte video or image."""
    import cv2

    from nolly_pipeline.processing.checks import alpha_plane

    matte = _middle(path, cv2.IMREAD_UNCHANGED, alpha_plane)
    if matte.ndim == 3:  # an image file: its alpha, or its grey level
        return matte[..., 3] if matte.shape[2] == 4 else cv2.cvtColor(matte, cv2.COLOR_BGR2GRAY)
    return matte


def _fit(image: Any, width: int) -> Any:
    import cv2

    height = max(round(image.shape[0] * width / image.shape[1]), 1)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def load_fonts() -> None:
    """Draw one label: OpenCV builds its Hershey font tables on the first ``putText`` of a
    process (~20 ms here). A run worker's zygote calls this, so no run pays it."""
    import numpy as np

    _label(np.zeros((18, 40, 3), dtype=np.uint8), "warm")


def _label(image: Any, text: str) -> Any:
    import cv2

    cv2.rectangle(image, (0, 0), (8 + 8 * len(text), 18), (0, 0, 0), thickness=-1)
    cv2.putText(image, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, _LABEL_COLOUR, 1, cv2.LINE_AA)
    return image


def _side_by_side(panels: list[tuple[Any, str]]) -> Any:
    import numpy as np

    each = WIDTH // len(panels)
    fitted = [_label(_fit(image, each), text) for image, text in panels]
    height = max(p.shape[0] for p in fitted)
    canvas = np.zeros((height, each * len(fitted), 3), dtype=np.uint8)
    for index, panel in enumerate(fitted):
        canvas[: panel.shape[0], index * each : (index + 1) * each] = panel
    return canvas


def _matte_over_picture(picture: Any, matte: Any) -> Any:
    import cv2
    import numpy as np

    matte = cv2.resize(matte, (picture.shape[1], picture.shape[0]), interpolation=cv2.INTER_LINEAR)
    alpha = (matte.astype(np.float32) / 255.0)[..., None]
    tint = np.array([90, 40, 160], dtype=np.float32)  # magenta-ish background, like a keyer's view
    overlay = picture.astype(np.float32) * alpha + (picture.astype(np.float32) * 0.3 + tint * 0.4) * (1 - alpha)
    grey = cv2.cvtColor(matte, cv2.COLOR_GRAY2BGR)
    return _side_by_side([(np.clip(overlay, 0, 255).astype(np.uint8), "matte over picture"), (grey, "matte")])


# --------------------------------------------------------------------------- audio


def _envelope(path: Path, columns: int) -> Any:
    """Per-column (min, max) of the mono mix of the first audio track, in -1..1."""
    import av
    import numpy as np

    from nolly_pipeline.processing.media import open_input, stream_duration

    lows, highs = np.zeros(columns), np.zeros(columns)
    position = 0
    # One open per file: opening costs FFmpeg's probe (~15 ms), which a separate probe() for
    # the duration paid twice; the checks have already proved the file decodes.
    with open_input(path) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or 48000
        total = max(int(stream_duration(container, stream) * rate), 1)
        resampler = av.AudioResampler(format="fltp", rate=stream.codec_context.sample_rate)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                mono = out.to_ndarray().mean(axis=0)
                index = np.minimum((position + np.arange(len(mono))) * columns // total, columns - 1)
                starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])  # index only grows
                cols = index[starts]
                lows[cols] = np.minimum(lows[cols], np.minimum.reduceat(mono, starts))
                highs[cols] = np.maximum(highs[cols], np.maximum.reduceat(mono, starts))
                position += len(mono)
    return lows, highs


def _waveforms(source: Path, output: Path) -> Any:
    import numpy as np

    strips = []
    for path, text, colour in ((source, "before", (200, 160, 80)), (output, "after", (80, 200, 120))):
        lows, highs = _envelope(path, WIDTH)
        strip = np.full((_WAVE_HEIGHT, WIDTH, 3), 24, dtype=np.uint8)
        middle = _WAVE_HEIGHT // 2
        strip[middle, :] = 70
        top = np.clip(middle - np.round(highs * middle), 0, _WAVE_HEIGHT - 1).astype(int)
        bottom = np.clip(middle - np.round(lows * middle), 0, _WAVE_HEIGHT - 1).astype(int)
        for x in range(WIDTH):
            strip[top[x] : bottom[x] + 1, x] = colour
        strips.append(_label(strip, text))
    return np.vstack(strips)
