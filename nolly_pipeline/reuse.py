"""Content-addressed result reuse: a job identical to a finished one takes its outputs.

Editors re-upload the same clip and ask for the same treatment (a second export, a
teammate's copy, a retry after closing the tab); each would cost a Replicate prediction or
minutes of local compute. Two jobs are identical when their keys are equal. The key is the
SHA-256 of:

* the input's bytes (hashed while downloading, see :mod:`nolly_pipeline.inputs`),
* the canonical JSON of the validated settings, defaults filled in (so ``{}`` and the
  defaults spelt out are one key, and a changed default is a new key),
* the job type,
* the backend and its version: the pinned Replicate version with its input mapping, or a
  local processor's ``PROCESSING_VERSION``.

There is no key (the job is processed and is never a source) when the backend's version
cannot be known (a Replicate model without a pinned version) or when a setting names
another file whose bytes the key does not cover (``lut_url``).

A new job takes the outputs of the newest ``done`` row with its key whose output objects
all still exist, within ``NOLLY_REUSE_SCOPE`` (``user``: the same user's jobs only;
``global``; ``off``). The objects are copied, never shared, so deleting either job's files
cannot break the other. No Dagster here: the ops call these functions.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass
from typing import Any

from nolly_pipeline.config import OUTPUT_BUCKET
from nolly_pipeline.db.job_rows import JobRow
from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline.errors import InputError, PermanentError
from nolly_pipeline.predictors.base import Predictor
from nolly_pipeline.processing.validation import parse_settings
from nolly_pipeline.storage.objects import ObjectStore
from nolly_pipeline.validation import JobSpec, settings_model

# Bump when the key's composition changes, so old keys never match new ones.
KEY_SCHEMA = 1
# Settings that name another object: its bytes are not in the key, so no reuse.
ASSET_SETTINGS = ("lut_url",)
# Done rows with the same key tried (newest first) before giving up on reuse.
MAX_CANDIDATES = 5


def canonical_settings(spec: JobSpec) -> dict[str, Any]:
    """The validated settings with every default filled in, as JSON values."""
    return parse_settings(settings_model(spec.job_type), spec.settings).model_dump(mode="json")


def reuse_key(spec: JobSpec, predictor: Predictor, input_sha256: str) -> str | None:
    """The job's key, or None when its result must never be reused (see the module doc)."""
    if predictor.version is None:
        return None
    settings = canonical_settings(spec)
    if any(settings.get(name) for name in ASSET_SETTINGS):
        return None
    payload = {
        "schema": KEY_SCHEMA,
        "input_sha256": input_sha256,
        "settings": settings,
        "type": spec.job_type.name,
        "backend": predictor.backend,
        "version": predictor.version,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def output_files(output_data: Any) -> list[dict[str, Any]]:
    """The file entries of a row's ``output_data`` (empty for rows without a usable list)."""
    if not isinstance(output_data, dict) or not isinstance(output_data.get("files"), list):
        return []
    return [f for f in output_data["files"] if isinstance(f, dict) and isinstance(f.get("storage_path"), str)]


def outputs_present(objects: ObjectStore, output_data: Any) -> bool:
    """True when the row lists output files and every one of them is still in storage."""
    files = output_files(output_data)
    if not files or output_data.get("bucket") != OUTPUT_BUCKET:
        return False
    return all(objects.exists(OUTPUT_BUCKET, f["storage_path"]) for f in files)


def find_source(store: JobStore, objects: ObjectStore, row: JobRow, key: str, scope: str) -> JobRow | None:
    """The done job whose outputs ``row`` can take, or None (then ``row`` is processed)."""
    if scope == "off":
        return None
    candidates = store.done_with_reuse_key(
        key, user_id=row.user_id if scope == "user" else None, exclude=row.id, limit=MAX_CANDIDATES
    )
    return next((c for c in candidates if outputs_present(objects, c.output_data)), None)


@dataclass(frozen=True)
class StoredFile:
    """One output object of a job, as ``output_data.files`` lists it (less its URL)."""

    role: str
    storage_path: str
    content_type: str
    bytes: int


def copy_outputs(objects: ObjectStore, source_id: str, source_output: Any, dest_prefix: str) -> list[StoredFile]:
    """Copy every output of job ``source_id`` (its ``output_data``) under ``dest_prefix``,
    same file names, in order.

    Each copy is whole or absent (see :meth:`ObjectStore.copy`), and the new row is only
    pointed at them once all exist. A source deleted meanwhile fails the job with a message
    saying a retry will process it (the retry's lookup no longer finds the source).
    """
    copied = []
    for entry in output_files(source_output):
        dest = f"{dest_prefix}/{posixpath.basename(entry['storage_path'])}"
        try:
            objects.copy(OUTPUT_BUCKET, entry["storage_path"], dest)
        except InputError:
            raise PermanentError(
                f"the outputs of job {source_id}, which this job reuses, were deleted while being copied; "
                "retry the job to process it"
            ) from None
        copied.append(
            StoredFile(
                role=str(entry.get("role", "output")),
                storage_path=dest,
                content_type=str(entry.get("content_type") or "application/octet-stream"),
                bytes=int(entry.get("bytes") or 0),
            )
        )
    if not copied:
        raise PermanentError(f"job {source_id}, which this job reuses, lists no output files; retry the job")
    return copied
