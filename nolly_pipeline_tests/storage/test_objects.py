"""Both object stores move files by streaming and map failures to our error types."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from nolly_pipeline.errors import InputError, TransientError
from nolly_pipeline.storage.objects import LocalObjectStore, ObjectStore, S3ObjectStore


@pytest.fixture(params=["local", "s3"])
def object_store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "buckets")
    return request.getfixturevalue("s3_store")


def test_round_trip_and_sizes(object_store: ObjectStore, tmp_path: Path) -> None:
    bucket = f"b-{uuid.uuid4().hex[:8]}"
    object_store.ensure_buckets((bucket,))
    object_store.ensure_buckets((bucket,))  # idempotent
    src = tmp_path / "in.bin"
    src.write_bytes(b"\x00\x01" * 300_000)
    object_store.upload(src, bucket, "user/x/in.bin", "application/octet-stream")
    assert object_store.exists(bucket, "user/x/in.bin")
    assert object_store.size(bucket, "user/x/in.bin") == 600_000
    dest = tmp_path / "out" / "copy.bin"
    assert object_store.download(bucket, "user/x/in.bin", dest) == 600_000
    assert dest.read_bytes() == src.read_bytes()


def test_download_hashes_the_bytes_in_order_while_streaming(object_store: ObjectStore, tmp_path: Path) -> None:
    """17 MB: above boto3's 8 MB multipart threshold, so S3 parts arrive in parallel."""
    bucket = f"b-{uuid.uuid4().hex[:8]}"
    object_store.ensure_buckets((bucket,))
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(17 * 1024 * 1024 + 5))
    object_store.upload(src, bucket, "u/big.bin")
    digest = hashlib.sha256()
    dest = tmp_path / "out" / "big.bin"
    assert object_store.download(bucket, "u/big.bin", dest, digest) == src.stat().st_size
    assert dest.read_bytes() == src.read_bytes()
    assert digest.hexdigest() == hashlib.sha256(src.read_bytes()).hexdigest()


def test_copy_duplicates_an_object_whole_with_its_content_type(object_store: ObjectStore, tmp_path: Path) -> None:
    bucket = f"b-{uuid.uuid4().hex[:8]}"
    object_store.ensure_buckets((bucket,))
    src = tmp_path / "matte.webm"
    src.write_bytes(b"webm" * 1000)
    object_store.upload(src, bucket, "u/j1/a1/00-matte.webm", "video/webm")
    object_store.copy(bucket, "u/j1/a1/00-matte.webm", "u/j2/a1/00-matte.webm")
    dest = tmp_path / "copy.webm"
    object_store.download(bucket, "u/j2/a1/00-matte.webm", dest)
    assert dest.read_bytes() == src.read_bytes()
    if isinstance(object_store, S3ObjectStore):
        head = object_store.client.head_object(Bucket=bucket, Key="u/j2/a1/00-matte.webm")
        assert head["ContentType"] == "video/webm"
    else:
        assert not list((tmp_path / "buckets").rglob("*.part"))  # written aside, then renamed
    with pytest.raises(InputError, match="not found"):
        object_store.copy(bucket, "u/j1/a1/gone.webm", "u/j3/a1/gone.webm")
    assert not object_store.exists(bucket, "u/j3/a1/gone.webm")


def test_missing_object_is_input_error(object_store: ObjectStore, tmp_path: Path) -> None:
    object_store.ensure_buckets(("vfx-assets",))
    with pytest.raises(InputError, match="not found"):
        object_store.download("vfx-assets", "nobody/nothing.mp4", tmp_path / "x")
    assert not object_store.exists("vfx-assets", "nobody/nothing.mp4")


def test_local_store_refuses_keys_that_escape_the_bucket(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "buckets")
    for key in ("../etc/passwd", "a/../../b", "/abs", "a//b"):
        with pytest.raises(InputError):
            store.download("vfx-assets", key, tmp_path / "x")


def test_unreachable_s3_is_transient(tmp_path: Path) -> None:
    from nolly_pipeline_tests.services import free_port

    store = S3ObjectStore.connect(f"http://127.0.0.1:{free_port()}", "us-east-1")
    store.client.meta.config.retries = {"max_attempts": 1}
    with pytest.raises(TransientError):
        store.download("vfx-assets", "a.mp4", tmp_path / "a.mp4")


def test_s3_presigned_url_is_served(s3_store: S3ObjectStore, tmp_path: Path) -> None:
    import httpx

    s3_store.ensure_buckets(("outputs",))
    src = tmp_path / "o.txt"
    src.write_text("result")
    s3_store.upload(src, "outputs", "u/j/o.txt", "text/plain")
    url = s3_store.presigned_url("outputs", "u/j/o.txt", 60)
    assert url and httpx.get(url).text == "result"
    assert s3_store.native_url("outputs", "u/j/o.txt") == "s3://outputs/u/j/o.txt"
