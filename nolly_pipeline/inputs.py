"""Getting a job's input file onto local disk, safely.

The download op calls :func:`acquire_input`; everything about where inputs may come from
and how big or long they may be is decided here, not in the Dagster glue. The file is
probed before any processing is spent on it, whichever backend will run the job: an audio
file sent to roto, a truncated upload or a four-hour clip fails here with one sentence,
not minutes later inside an encoder or a paid remote prediction. The SHA-256 of the bytes
(the content half of the result-reuse key) is computed as they stream in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from nolly_pipeline.errors import InputError
from nolly_pipeline.job_types import JobType
from nolly_pipeline.storage.http_fetch import HttpFetcher, too_large
from nolly_pipeline.storage.objects import Digest, ObjectStore
from nolly_pipeline.storage.urls import ObjectRef, describe_url
from nolly_pipeline.validation import JobSpec


@dataclass(frozen=True)
class InputLimits:
    max_bytes: int
    # job type name -> longest accepted input, seconds
    max_duration_seconds: Mapping[str, float]


@dataclass(frozen=True)
class AcquiredInput:
    path: Path
    size: int
    # Where it came from, for run metadata (never contains credentials).
    origin: str
    # Hex SHA-256 of the file's bytes, computed while downloading.
    sha256: str


def acquire_input(
    spec: JobSpec, objects: ObjectStore, fetcher: HttpFetcher, limits: InputLimits, dest_dir: Path
) -> AcquiredInput:
    """Copy the job's input into ``dest_dir`` and check it is media this job type can use."""
    dest = dest_dir / spec.source.filename
    digest = hashlib.sha256()
    if isinstance(spec.source, ObjectRef):
        size = _download_object(objects, spec.source, dest, limits.max_bytes, digest)
        origin = f"{spec.source.bucket}/{spec.source.key}"
    else:
        size = fetcher.fetch(spec.source.url, dest, limits.max_bytes, digest).size
        origin = describe_url(spec.source.url)
    check_media(dest, spec.job_type, limits.max_duration_seconds[spec.job_type.name])
    return AcquiredInput(path=dest, size=size, origin=origin, sha256=digest.hexdigest())


def _download_object(objects: ObjectStore, ref: ObjectRef, dest: Path, max_bytes: int, digest: Digest) -> int:
    """Download after a HEAD shows the object fits; re-check after, in case it was replaced."""
    declared = objects.size(ref.bucket, ref.key)
    if declared > max_bytes:
        raise too_large(declared, max_bytes)
    size = objects.download(ref.bucket, ref.key, dest, digest)
    if size > max_bytes:
        dest.unlink(missing_ok=True)
        raise too_large(size, max_bytes)
    return size


def check_media(path: Path, job_type: JobType, max_duration: float) -> None:
    """Raise InputError unless ``path`` decodes, is a kind ``job_type`` takes and is not too long."""
    from nolly_pipeline.processing.media import probe  # deferred: PyAV loads FFmpeg

    info = probe(path)
    if info.kind not in job_type.input_kinds:
        wanted = " or ".join(job_type.input_kinds)
        raise InputError(f"{job_type.name} needs {wanted} input, got {info.kind}")
    if info.duration > max_duration:
        raise InputError(
            f"input is {_clock(info.duration)} long; {job_type.name} accepts at most {_clock(max_duration)}"
        )


def _clock(seconds: float) -> str:
    """``1:02:03`` for long media, ``4.2 s`` below a minute."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
