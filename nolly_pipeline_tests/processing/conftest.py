"""Fixtures that synthesise small test media; nothing is downloaded.

Video comes from FFmpeg's ``testsrc2`` and ``sine`` sources (via the reference CLI), speech
from ``espeak-ng``. espeak-ng is a Debian package (``apt-get install espeak-ng``): without it
the speech tests skip on a developer machine but fail under ``CI=true``, so CI cannot pass
silently without them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from nolly_pipeline_tests.processing.reference import espeak_speech, ffmpeg


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def video_clip(media_dir: Path) -> Path:
    """2 s of 320x240 at 25 fps with a stereo AAC tone: 50 frames."""
    path = media_dir / "clip.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=2",
        "-f", "lavfi", "-i", "sine=f=440:d=2:sample_rate=48000",
        "-ac", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path),
    )
    return path


@pytest.fixture(scope="session")
def still_png(media_dir: Path) -> Path:
    path = media_dir / "still.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x120", "-frames:v", "1", str(path))
    return path


@pytest.fixture(scope="session")
def still_jpg(media_dir: Path) -> Path:
    path = media_dir / "still.jpg"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x120", "-frames:v", "1", "-q:v", "2", str(path))
    return path


@pytest.fixture(scope="session")
def corrupt_files(media_dir: Path, video_clip: Path) -> dict[str, Path]:
    data = video_clip.read_bytes()
    files = {
        "garbage.mp4": b"this is not a video" * 50,
        "truncated.mp4": data[: len(data) // 3],
        "empty.wav": b"",
    }
    for name, payload in files.items():
        (media_dir / name).write_bytes(payload)
    return {name: media_dir / name for name in files}


@pytest.fixture(scope="session")
def speech_48k(media_dir: Path) -> np.ndarray:
    """~12 s of espeak-ng English at 48 kHz, float in -1..1."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        if os.environ.get("CI"):
            pytest.fail("espeak-ng is required under CI (apt-get install -y espeak-ng)")
        pytest.skip("espeak-ng not installed")
    return espeak_speech(espeak, media_dir / "speech.wav")
