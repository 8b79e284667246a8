"""acquire_input: size limits before and after download, media kind and length per job type.

The media are tiny real files made in milliseconds (the session-wide ``media`` fixture in
the root conftest, also used by the orchestration bad-input corpus).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from nolly_pipeline.errors import InputError
from nolly_pipeline.inputs import InputLimits, _clock, acquire_input, check_media
from nolly_pipeline.job_types import JOB_TYPES
from nolly_pipeline.storage.http_fetch import HttpFetcher
from nolly_pipeline.storage.objects import Digest, LocalObjectStore
from nolly_pipeline.storage.urls import HttpSource, ObjectRef
from nolly_pipeline.validation import JobSpec
from nolly_pipeline_tests.http_server import LocalServer, fake_resolver

LIMITS = InputLimits(max_bytes=1_000_000, max_duration_seconds={name: 1.0 for name in JOB_TYPES})


@pytest.fixture
def objects(tmp_path: Path, media: dict[str, bytes]) -> LocalObjectStore:
    store = LocalObjectStore(tmp_path / "buckets")
    for name, data in media.items():
        path = tmp_path / "buckets" / "vfx-assets" / "u" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return store


def spec(job_type: str, name: str) -> JobSpec:
    return JobSpec(JOB_TYPES[job_type], ObjectRef("vfx-assets", f"u/{name}"), {})


def acquire(objects: LocalObjectStore, dest: Path, job_type: str, name: str, limits: InputLimits = LIMITS):
    return acquire_input(spec(job_type, name), objects, HttpFetcher(()), limits, dest)


@pytest.mark.parametrize(
    "job_type, name",
    [("roto", "clip.mp4"), ("roto", "still.png"), ("color-grade", "clip.mp4"),
     ("audio-clean", "take.wav"), ("audio-clean", "clip.mp4")],
)
def test_media_the_type_takes_is_acquired(objects: LocalObjectStore, tmp_path: Path, job_type: str, name: str) -> None:
    acquired = acquire(objects, tmp_path / "dest", job_type, name)
    assert acquired.path == tmp_path / "dest" / name and acquired.path.stat().st_size == acquired.size
    assert acquired.origin == f"vfx-assets/u/{name}"
    assert acquired.sha256 == hashlib.sha256(acquired.path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "job_type, name, message",
    [
        ("roto", "take.wav", "roto needs video or image input, got audio"),
        ("color-grade", "take.wav", "color-grade needs video or image input, got audio"),
        ("audio-clean", "still.png", "audio-clean needs audio or video input, got image"),
        ("roto", "long.mp4", "input is 2.0 s long; roto accepts at most 1.0 s"),
        ("audio-clean", "long.wav", "input is 2.0 s long; audio-clean accepts at most 1.0 s"),
        ("roto", "truncated.mp4", "could not decode truncated.mp4"),
        ("roto", "garbage.mp4", "could not decode garbage.mp4"),
        ("roto", "empty.mp4", "could not decode empty.mp4: file is empty"),
        ("roto", "gone.mp4", "input file not found: vfx-assets/u/gone.mp4"),
    ],
)
def test_unusable_media_is_refused_readably(
    objects: LocalObjectStore, tmp_path: Path, job_type: str, name: str, message: str
) -> None:
    with pytest.raises(InputError) as err:
        acquire(objects, tmp_path / "dest", job_type, name)
    assert err.value.message.startswith(message)
    assert str(tmp_path) not in err.value.message


class CountingStore(LocalObjectStore):
    downloads = 0

    def download(self, bucket: str, key: str, dest: Path, digest: Digest | None = None) -> int:
        self.downloads += 1
        return super().download(bucket, key, dest, digest)


def test_oversize_object_is_refused_from_its_size_without_downloading(tmp_path: Path, media: dict[str, bytes]) -> None:
    store = CountingStore(tmp_path / "buckets")
    (tmp_path / "buckets" / "vfx-assets" / "u").mkdir(parents=True)
    (tmp_path / "buckets" / "vfx-assets" / "u" / "clip.mp4").write_bytes(media["clip.mp4"])
    small = InputLimits(max_bytes=len(media["clip.mp4"]) - 1, max_duration_seconds=LIMITS.max_duration_seconds)
    with pytest.raises(InputError, match=r"input is too large \(.*\); the limit is"):
        acquire(store, tmp_path / "dest", "roto", "clip.mp4", small)
    assert store.downloads == 0 and not (tmp_path / "dest").exists()


class GrowingStore(LocalObjectStore):
    """Reports a small size, then serves a bigger object (replaced between HEAD and GET)."""

    def size(self, bucket: str, key: str) -> int:
        return 1


def test_object_replaced_by_a_bigger_one_after_the_size_check_is_refused(
    tmp_path: Path, media: dict[str, bytes]
) -> None:
    store = GrowingStore(tmp_path / "buckets")
    (tmp_path / "buckets" / "vfx-assets" / "u").mkdir(parents=True)
    (tmp_path / "buckets" / "vfx-assets" / "u" / "clip.mp4").write_bytes(media["clip.mp4"])
    small = InputLimits(max_bytes=1000, max_duration_seconds=LIMITS.max_duration_seconds)
    with pytest.raises(InputError, match="too large"):
        acquire(store, tmp_path / "dest", "roto", "clip.mp4", small)
    assert not (tmp_path / "dest" / "clip.mp4").exists()


def test_http_source_is_fetched_and_checked(tmp_path: Path, media: dict[str, bytes]) -> None:
    with LocalServer() as server:
        server.files["/media/take.wav"] = media["take.wav"]
        server.files["/media/clip.mp4"] = media["clip.mp4"]
        fetcher = HttpFetcher(
            ["media.test"], resolver=fake_resolver({"media.test": ["127.0.0.1"]}),
            allow_addresses_for_tests=["127.0.0.1"],
        )
        url = f"http://media.test:{server.port}/media/clip.mp4?token=secret"
        job = JobSpec(JOB_TYPES["roto"], HttpSource(url), {})
        acquired = acquire_input(job, LocalObjectStore(tmp_path), fetcher, LIMITS, tmp_path / "dest")
        assert acquired.path.read_bytes() == media["clip.mp4"]
        assert acquired.origin == f"http://media.test:{server.port}/media/clip.mp4"  # no token
        assert acquired.sha256 == hashlib.sha256(media["clip.mp4"]).hexdigest()

        audio = JobSpec(JOB_TYPES["roto"], HttpSource(f"http://media.test:{server.port}/media/take.wav"), {})
        with pytest.raises(InputError, match="roto needs video or image input, got audio"):
            acquire_input(audio, LocalObjectStore(tmp_path), fetcher, LIMITS, tmp_path / "dest2")


def test_check_media_accepts_a_still_image_whatever_the_duration_limit(media: dict[str, bytes], tmp_path: Path) -> None:
    path = tmp_path / "still.png"
    path.write_bytes(media["still.png"])
    check_media(path, JOB_TYPES["color-grade"], max_duration=0.001)


@pytest.mark.parametrize("seconds, shown", [(4.2, "4.2 s"), (60, "0:01:00"), (7322.4, "2:02:02")])
def test_durations_read_naturally(seconds: float, shown: str) -> None:
    assert _clock(seconds) == shown
