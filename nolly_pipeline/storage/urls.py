"""Map the URLs the frontend writes to objects in configured storage, and back.

The seed stores public object URLs (``{base}/{bucket}/{key}``, Supabase style); tools and
tests may use ``s3://bucket/key``. Anything else is refused here: the pipeline only fetches
objects from its own storage, so a job row cannot make it fetch an arbitrary address.
"""

from __future__ import annotations

import posixpath
import uuid
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from nolly_pipeline.config import OUTPUT_BUCKET, SEED_BUCKETS
from nolly_pipeline.errors import InputError

# Buckets an input may come from. Outputs are allowed so one job can feed another (roto, then
# grade), but only under the requesting user's own prefix.
INPUT_BUCKETS = SEED_BUCKETS


@dataclass(frozen=True)
class ObjectRef:
    bucket: str
    key: str

    @property
    def filename(self) -> str:
        return posixpath.basename(self.key)


def _describe(url: str) -> str:
    """A short, log-safe rendering of a URL: no query string (it may hold a token)."""
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else url
    return shown if len(shown) <= 120 else shown[:117] + "..."


def resolve_input_url(url: object, public_base_url: str | None, user_id: uuid.UUID) -> ObjectRef:
    """Turn ``file_url`` into an object reference, or raise :class:`InputError` saying why not."""
    if not isinstance(url, str) or not url.strip():
        raise InputError("input_data.file_url is missing or not a string")
    url = url.strip()
    ref: ObjectRef | None = None
    if url.startswith("s3://"):
        bucket, _, key = url[len("s3://"):].partition("/")
        ref = ObjectRef(bucket, key)
    elif public_base_url and url.startswith(public_base_url.rstrip("/") + "/"):
        rest = urlsplit(url[len(public_base_url.rstrip("/")) + 1:]).path
        bucket, _, key = rest.partition("/")
        ref = ObjectRef(bucket, unquote(key))
    if ref is None:
        raise InputError(
            f"unsupported file_url {_describe(url)}: only objects in the studio's storage "
            "(its public URLs or s3://bucket/key) are accepted"
        )
    if ref.bucket not in INPUT_BUCKETS:
        raise InputError(f"file_url points to bucket '{ref.bucket}', which is not an input bucket")
    normalized = posixpath.normpath(ref.key) if ref.key else ""
    if not ref.key or normalized != ref.key or normalized.startswith(("../", "/")) or ref.key.endswith("/"):
        raise InputError(f"file_url has an invalid object key: {_describe(url)}")
    if ref.bucket == OUTPUT_BUCKET and not ref.key.startswith(f"{user_id}/"):
        raise InputError("file_url points to another user's output")
    return ref


def public_url(public_base_url: str, ref: ObjectRef) -> str:
    return f"{public_base_url.rstrip('/')}/{ref.bucket}/{quote(ref.key)}"
