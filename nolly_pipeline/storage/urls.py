"""Map the URLs the frontend writes to objects in configured storage, and back.

The seed stores public object URLs (``{base}/{bucket}/{key}``, Supabase style); tools and
tests may use ``s3://bucket/key``. A job's main input may also be an http(s) URL on a host
the operator allowlisted (``NOLLY_ALLOWED_INPUT_HOSTS``); its addresses are checked when it
is fetched (see :mod:`http_fetch`). Anything else is refused here, so a job row cannot make
the pipeline fetch an arbitrary address.
"""

from __future__ import annotations

import posixpath
import re
import uuid
from dataclasses import dataclass
from typing import Collection
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


@dataclass(frozen=True)
class HttpSource:
    """An input on an allowlisted web host, fetched with :class:`http_fetch.HttpFetcher`."""

    url: str

    @property
    def filename(self) -> str:
        """The URL's last path segment, reduced to characters safe as a local file name."""
        return safe_filename(posixpath.basename(unquote(urlsplit(self.url).path)), "input")


InputSource = ObjectRef | HttpSource


def safe_filename(name: str, fallback: str) -> str:
    """``name`` reduced to characters safe in a local path or an object key (``fallback`` if none)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:120] or fallback


def describe_url(url: str) -> str:
    """A short, log-safe rendering of a URL: no query string or user info (they may hold
    a token or a password)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        parts = urlsplit(url.replace("[", "%5B").replace("]", "%5D"))
    netloc = parts.netloc.rpartition("@")[2]
    shown = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else url.split("?")[0]
    return shown if len(shown) <= 120 else shown[:117] + "..."


def resolve_input_url(url: object, public_base_url: str | None, user_id: uuid.UUID) -> ObjectRef:
    """Turn a URL into an object in storage, or raise :class:`InputError` saying why not."""
    url = _require_url(url)
    ref = _storage_ref(url, public_base_url)
    if ref is None:
        raise InputError(
            f"unsupported file_url {describe_url(url)}: only objects in the studio's storage "
            "(its public URLs or s3://bucket/key) are accepted"
        )
    return _checked_ref(ref, url, user_id)


def resolve_source(
    url: object, public_base_url: str | None, user_id: uuid.UUID, allowed_hosts: Collection[str]
) -> InputSource:
    """Like :func:`resolve_input_url`, but also accepts http(s) URLs on ``allowed_hosts``."""
    url = _require_url(url)
    ref = _storage_ref(url, public_base_url)
    if ref is not None:
        return _checked_ref(ref, url, user_id)
    try:
        parts = urlsplit(url)
        host, _ = (parts.hostname or "").lower(), parts.port
    except ValueError:
        raise InputError(f"file_url is not a valid URL: {describe_url(url)}") from None
    if parts.scheme in ("http", "https") and host in {h.lower() for h in allowed_hosts}:
        if parts.username is not None or parts.password is not None:
            raise InputError(f"file_url must not contain credentials: {describe_url(url)}")
        return HttpSource(url)
    raise InputError(
        f"unsupported file_url {describe_url(url)}: only objects in the studio's storage "
        "(its public URLs or s3://bucket/key) or files on an allowed input host are accepted"
    )


def _require_url(url: object) -> str:
    if not isinstance(url, str) or not url.strip():
        raise InputError("input_data.file_url is missing or not a string")
    return url.strip()


def _storage_ref(url: str, public_base_url: str | None) -> ObjectRef | None:
    if url.startswith("s3://"):
        bucket, _, key = url[len("s3://"):].partition("/")
        return ObjectRef(bucket, key)
    if public_base_url and url.startswith(public_base_url.rstrip("/") + "/"):
        rest = urlsplit(url[len(public_base_url.rstrip("/")) + 1:]).path
        bucket, _, key = rest.partition("/")
        return ObjectRef(bucket, unquote(key))
    return None


def _checked_ref(ref: ObjectRef, url: str, user_id: uuid.UUID) -> ObjectRef:
    if ref.bucket not in INPUT_BUCKETS:
        raise InputError(f"file_url points to bucket '{ref.bucket}', which is not an input bucket")
    normalized = posixpath.normpath(ref.key) if ref.key else ""
    if not ref.key or normalized != ref.key or normalized.startswith(("../", "/")) or ref.key.endswith("/"):
        raise InputError(f"file_url has an invalid object key: {describe_url(url)}")
    if ref.bucket == OUTPUT_BUCKET and not ref.key.startswith(f"{user_id}/"):
        raise InputError("file_url points to another user's output")
    return ref


def public_url(public_base_url: str, ref: ObjectRef) -> str:
    return f"{public_base_url.rstrip('/')}/{ref.bucket}/{quote(ref.key)}"
