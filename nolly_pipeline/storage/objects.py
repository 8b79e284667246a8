"""Object storage: local folders (embedded default) or any S3-protocol server.

Both backends move whole files between disk and storage, streaming, so a 4 GB clip never
sits in memory. Buckets and keys are the only addressing; URL forms live in :mod:`urls`.
A download can feed a digest (SHA-256 for result reuse) with the bytes as they arrive, so
the file is never read a second time to hash it. ``copy`` duplicates an object inside the
store (server-side on S3) and never exposes a half-written one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import BinaryIO, Protocol

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from nolly_pipeline.errors import InputError, TransientError

# S3's limit for a single CopyObject; bigger objects are copied in parts, still server-side.
MAX_SINGLE_COPY_BYTES = 5 * 1024**3


class ObjectStore(Protocol):
    """What the pipeline needs from storage."""

    def download(self, bucket: str, key: str, dest: Path, digest: "Digest | None" = None) -> int:
        """Copy the object to ``dest``; return its size. Missing object -> InputError.
        ``digest`` (a hashlib object) is updated with the bytes in order while they stream."""

    def upload(self, src: Path, bucket: str, key: str, content_type: str | None = None) -> None: ...

    def copy(self, bucket: str, src_key: str, dest_key: str) -> None:
        """Duplicate an object within ``bucket``; readers see all of it or nothing.
        Missing source -> InputError."""

    def exists(self, bucket: str, key: str) -> bool: ...

    def size(self, bucket: str, key: str) -> int:
        """Size in bytes of the object. Missing object -> InputError."""

    def ensure_buckets(self, buckets: tuple[str, ...]) -> None: ...

    def native_url(self, bucket: str, key: str) -> str:
        """A URL for the object when no public base URL is configured (``s3://`` or ``file://``)."""

    def presigned_url(self, bucket: str, key: str, expires_seconds: int) -> str | None:
        """A time-limited HTTP(S) URL, or None when the backend cannot serve one."""


class Digest(Protocol):
    """What a download needs from a ``hashlib`` object."""

    def update(self, data: bytes, /) -> None: ...


class _HashingWriter:
    """A write-only, non-seekable file that hashes what it writes.

    Non-seekable on purpose: boto3's transfer manager then writes ranged parts in order
    (still fetched in parallel), which is what a running digest needs.
    """

    def __init__(self, fh: BinaryIO, digest: Digest) -> None:
        self.fh, self.digest = fh, digest

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.fh.write(data)

    def seekable(self) -> bool:
        return False


def _safe_key(key: str) -> str:
    """Refuse keys that could escape a bucket folder on local storage."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InputError(f"invalid object key {key!r}")
    return key


class LocalObjectStore:
    """Buckets are folders under ``root``; used by ``dagster dev`` with no configuration."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, bucket: str, key: str) -> Path:
        return self.root / _safe_key(bucket) / _safe_key(key)

    def download(self, bucket: str, key: str, dest: Path, digest: Digest | None = None) -> int:
        src = self._path(bucket, key)
        if not src.is_file():
            raise InputError(f"input file not found: {bucket}/{key}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if digest is None:
            shutil.copyfile(src, dest)
        else:
            with open(src, "rb") as fin, open(dest, "wb") as fout:
                shutil.copyfileobj(fin, _HashingWriter(fout, digest), 1 << 20)  # type: ignore[misc]
        return dest.stat().st_size

    def upload(self, src: Path, bucket: str, key: str, content_type: str | None = None) -> None:
        dest = self._path(bucket, key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)  # readers never see a half-written object

    def copy(self, bucket: str, src_key: str, dest_key: str) -> None:
        src = self._path(bucket, src_key)
        if not src.is_file():
            raise InputError(f"input file not found: {bucket}/{src_key}")
        self.upload(src, bucket, dest_key)

    def exists(self, bucket: str, key: str) -> bool:
        return self._path(bucket, key).is_file()

    def size(self, bucket: str, key: str) -> int:
        path = self._path(bucket, key)
        if not path.is_file():
            raise InputError(f"input file not found: {bucket}/{key}")
        return path.stat().st_size

    def ensure_buckets(self, buckets: tuple[str, ...]) -> None:
        for bucket in buckets:
            (self.root / _safe_key(bucket)).mkdir(parents=True, exist_ok=True)

    def native_url(self, bucket: str, key: str) -> str:
        return self._path(bucket, key).as_uri()

    def presigned_url(self, bucket: str, key: str, expires_seconds: int) -> str | None:
        return None


def _storage_error(exc: Exception, what: str) -> Exception:
    """Map boto errors to our types: 5xx/connection -> transient, 404 -> bad input."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
            return InputError(f"input file not found: {what}")
        if status >= 500 or code in ("SlowDown", "RequestTimeout", "InternalError"):
            return TransientError(f"storage error {status or code} on {what}")
        return InputError(f"storage refused {what} ({code or status})")
    if isinstance(exc, (EndpointConnectionError, BotoCoreError)):
        return TransientError(f"storage unreachable for {what}: {type(exc).__name__}")
    return exc


class S3ObjectStore:
    """Any S3-protocol server: AWS, MinIO, Supabase Storage's S3 endpoint, moto in tests."""

    def __init__(self, client: "boto3.client", region: str | None = None) -> None:  # type: ignore[valid-type]
        self.client = client
        self.region = region

    @classmethod
    def connect(
        cls,
        endpoint_url: str | None,
        region: str | None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> "S3ObjectStore":
        config = BotoConfig(
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            # Supabase Storage and MinIO expect path-style addressing.
            s3={"addressing_style": "path"},
        )
        client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region or "us-east-1",
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )
        return cls(client, region)

    def download(self, bucket: str, key: str, dest: Path, digest: Digest | None = None) -> int:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            if digest is None:
                self.client.download_file(bucket, key, str(dest))
            else:
                with open(dest, "wb") as fh:
                    self.client.download_fileobj(bucket, key, _HashingWriter(fh, digest))
        except (ClientError, BotoCoreError) as exc:
            dest.unlink(missing_ok=True)
            raise _storage_error(exc, f"{bucket}/{key}") from None
        return dest.stat().st_size

    def upload(self, src: Path, bucket: str, key: str, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else None
        try:
            self.client.upload_file(str(src), bucket, key, ExtraArgs=extra)
        except (ClientError, BotoCoreError) as exc:
            raise _storage_error(exc, f"{bucket}/{key}") from None

    def copy(self, bucket: str, src_key: str, dest_key: str) -> None:
        """Server-side: no byte passes through this process. Objects up to 5 GB take one
        CopyObject (atomic, metadata kept); larger ones a multipart copy, whose object only
        appears when the upload completes."""
        try:
            self.client.copy(
                {"Bucket": bucket, "Key": src_key}, bucket, dest_key,
                Config=TransferConfig(multipart_threshold=MAX_SINGLE_COPY_BYTES),
            )
        except (ClientError, BotoCoreError) as exc:
            raise _storage_error(exc, f"{bucket}/{src_key}") from None

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.size(bucket, key)
        except InputError:
            return False
        return True

    def size(self, bucket: str, key: str) -> int:
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _storage_error(exc, f"{bucket}/{key}") from None
        return int(head["ContentLength"])

    def ensure_buckets(self, buckets: tuple[str, ...]) -> None:
        existing = {b["Name"] for b in self.client.list_buckets().get("Buckets", [])}
        for bucket in buckets:
            if bucket in existing:
                continue
            if self.region and self.region != "us-east-1":
                self.client.create_bucket(
                    Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": self.region}
                )
            else:
                self.client.create_bucket(Bucket=bucket)

    def native_url(self, bucket: str, key: str) -> str:
        return f"s3://{bucket}/{key}"

    def presigned_url(self, bucket: str, key: str, expires_seconds: int) -> str | None:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_seconds
        )
