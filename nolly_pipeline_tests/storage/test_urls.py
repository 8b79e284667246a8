"""Only objects in the studio's own storage are accepted as inputs."""

from __future__ import annotations

import uuid

import pytest

from nolly_pipeline.errors import InputError
from nolly_pipeline.storage.urls import ObjectRef, public_url, resolve_input_url

BASE = "https://proj.supabase.co/storage/v1/object/public"
USER = uuid.UUID("11111111-1111-4111-8111-111111111111")


@pytest.mark.parametrize(
    "url, expected",
    [
        ("s3://vfx-assets/u/clip.mp4", ObjectRef("vfx-assets", "u/clip.mp4")),
        (f"{BASE}/audio-uploads/u/take%201.wav", ObjectRef("audio-uploads", "u/take 1.wav")),
        (f"{BASE}/vfx-assets/u/a.mp4?download=1", ObjectRef("vfx-assets", "u/a.mp4")),
        (f"s3://outputs/{USER}/job/a1/00-out.mp4", ObjectRef("outputs", f"{USER}/job/a1/00-out.mp4")),
    ],
)
def test_accepted_urls(url: str, expected: ObjectRef) -> None:
    assert resolve_input_url(url, BASE, USER) == expected


@pytest.mark.parametrize(
    "url, fragment",
    [
        (None, "missing"),
        (42, "missing"),
        ("", "missing"),
        ("https://evil.example.com/a.mp4", "unsupported file_url"),
        ("file:///etc/passwd", "unsupported file_url"),
        ("http://169.254.169.254/latest/meta-data", "unsupported file_url"),
        ("s3://secret-bucket/a.mp4", "not an input bucket"),
        ("s3://pipeline-intermediates/x", "not an input bucket"),
        ("s3://vfx-assets/", "invalid object key"),
        ("s3://vfx-assets/a/../../b.mp4", "invalid object key"),
        ("s3://outputs/someone-else/job/out.mp4", "another user's output"),
    ],
)
def test_refused_urls(url: object, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        resolve_input_url(url, BASE, USER)


def test_public_url_round_trips() -> None:
    ref = ObjectRef("outputs", f"{USER}/j/a1/00-take 1.wav")
    assert resolve_input_url(public_url(BASE, ref), BASE, USER) == ref
