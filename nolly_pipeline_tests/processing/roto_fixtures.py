"""Test media for roto, built from a person photo that ships in scikit-image.

``skimage.data.astronaut()`` (Eileen Collins, 512x512, public domain) is the only portrait
available offline here; the helpers below place it in frames and clips of any size and
describe where the person is, so tests can score a matte without a labelled dataset.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from skimage import data

from nolly_pipeline.processing.models import MODEL_SHA256, default_models_dir, fetch_models

PHOTO_SIZE = 512


def astronaut() -> np.ndarray:
    """The 512x512 RGB photo."""
    return data.astronaut()


def person_mask() -> np.ndarray:
    """Hand-drawn bool mask of the astronaut (head, neck ring and suit) in the 512x512 photo.

    Deliberately rough and a little inside the outline, so the test judges coverage, not
    edge accuracy; the helmet she holds is excluded (the model may call it either way).
    """
    mask = np.zeros((PHOTO_SIZE, PHOTO_SIZE), np.uint8)
    cv2.ellipse(mask, (225, 95), (62, 78), 0, 0, 360, 1, -1)  # head and hair
    torso = np.array([[40, 511], [40, 290], [130, 175], [310, 175], [350, 290], [350, 511]])
    cv2.fillPoly(mask, [torso.astype(np.int32)], 1)
    return mask.astype(bool)


def background_mask() -> np.ndarray:
    """Bool mask of plain wall that is certainly not the person (left and right of her head)."""
    mask = np.zeros((PHOTO_SIZE, PHOTO_SIZE), bool)
    mask[0:110, 95:140] = True  # between the flag and her hair
    mask[0:130, 315:350] = True  # between her hair and the shuttle model
    return mask


def frame_with_person(width: int, height: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The photo scaled to ``height`` and centred on a plain wall, as an RGB frame.

    Returns the frame and ``(x, y, size)`` of the photo inside it, to map the masks above.
    """
    size = min(width, height)
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = (150, 150, 155)  # a grey studio wall, like the photo's own backdrop
    x, y = (width - size) // 2, (height - size) // 2
    frame[y : y + size, x : x + size] = cv2.resize(
        astronaut(), (size, size), interpolation=cv2.INTER_AREA
    )
    return frame, (x, y, size)


def place(mask: np.ndarray, width: int, height: int, placement: tuple[int, int, int]) -> np.ndarray:
    """Map a 512x512 photo mask into frame coordinates."""
    x, y, size = placement
    out = np.zeros((height, width), bool)
    scaled = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    out[y : y + size, x : x + size] = scaled.astype(bool)
    return out


def write_static_clip(
    path: Path,
    *,
    width: int,
    height: int,
    frames: int,
    fps: int = 25,
    grain: float = 3.0,
    audio: str | None = None,
    codec: str = "libx264",
) -> tuple[int, int, int]:
    """Encode the still photo ``frames`` times with fresh sensor grain in each frame.

    Grain makes each decoded frame differ the way real camera footage does, which is what
    makes an unsmoothed matte flicker on a locked-off shot. ``audio`` names an audio encoder
    (e.g. ``"aac"``, ``"pcm_s16le"``) to add a 440 Hz tone of the same length.
    Returns the photo placement (see :func:`frame_with_person`).
    """
    base, placement = frame_with_person(width, height)
    rng = np.random.default_rng(7)
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "18"} if codec == "libx264" else {}
        sound = container.add_stream(audio, rate=48000) if audio else None
        samples_per_frame = 48000 // fps
        for index in range(frames):
            noisy = base.astype(np.float32) + rng.normal(0.0, grain, base.shape)
            picture = av.VideoFrame.from_ndarray(
                noisy.clip(0, 255).astype(np.uint8), format="rgb24"
            )
            picture.pts, picture.time_base = index, Fraction(1, fps)
            container.mux(video.encode(picture))
            if sound is not None:
                t = (np.arange(samples_per_frame) + index * samples_per_frame) / 48000
                tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
                chunk = av.AudioFrame.from_ndarray(
                    np.vstack([tone, tone]), format="fltp", layout="stereo"
                )
                chunk.sample_rate, chunk.pts = 48000, index * samples_per_frame
                chunk.time_base = Fraction(1, 48000)
                container.mux(sound.encode(chunk))
        container.mux(video.encode(None))
        if sound is not None:
            container.mux(sound.encode(None))
    return placement


def write_tone(path: Path, seconds: float = 0.5) -> None:
    """A short stereo WAV with no video stream."""
    samples = int(48000 * seconds)
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)
    with av.open(str(path), "w") as container:
        sound = container.add_stream("pcm_s16le", rate=48000)
        chunk = av.AudioFrame.from_ndarray(np.vstack([tone, tone]), format="fltp", layout="stereo")
        chunk.sample_rate = 48000
        container.mux(sound.encode(chunk))
        container.mux(sound.encode(None))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model cache: the real one when ``nolly-pipeline models fetch`` already ran, else
    a session temp dir (fetch_models reuses pip's download cache, so this stays quick)."""
    cached = default_models_dir()
    if all((cached / name).is_file() for name in MODEL_SHA256):
        return fetch_models(cached)  # checks the hashes; downloads only to repair
    return fetch_models(tmp_path_factory.mktemp("models"))
