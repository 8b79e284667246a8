"""A corpus of bad inputs through the whole pipeline: every one ends ``failed`` with a
readable message and one notification, while the good jobs of the same tick succeed.

Rows are inserted as the frontend does, one sensor tick dispatches them all, and each run
executes in process on real PostgreSQL and S3, with the fake Replicate as backend. Some
rows are refused by the sensor (nothing to fetch), the rest by the download op (size,
media kind, length, decoding, HTTP rules). HTTP inputs come from a local server that only
the test resource below can reach; the SSRF cases check that even so, every other private
address, and every redirect to one, is refused.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any, Callable, Iterator

import pytest
from dagster import Definitions

from nolly_pipeline.config import Settings
from nolly_pipeline.definitions import build_definitions
from nolly_pipeline.orchestration.resources import InputPolicyResource
from nolly_pipeline.storage.http_fetch import HttpFetcher
from nolly_pipeline_tests.fakes.replicate_api import Behavior
from nolly_pipeline_tests.fakes.versions import AUDIO_VERSION, ROTO_VERSION
from nolly_pipeline_tests.orchestration.conftest import Pipeline
from nolly_pipeline_tests.orchestration.test_pipeline import insert_row
from nolly_pipeline_tests.http_server import TEST_DNS, LocalServer, fake_resolver

MAX_BYTES = 500_000
ALLOWED = ",".join(TEST_DNS)


class LoopbackInputPolicy(InputPolicyResource):
    """Test-only: the production policy plus the fake names and the local server's address."""

    def fetcher(self) -> HttpFetcher:
        return HttpFetcher(
            self.allowed_hosts, resolver=fake_resolver(TEST_DNS), allow_addresses_for_tests=["127.0.0.1"]
        )


@dataclasses.dataclass
class Ctx:
    """What a case needs to build its row: storage uploads and the local server."""

    pipeline: Pipeline
    server: LocalServer
    user: uuid.UUID
    media: dict[str, bytes]

    def upload(self, name: str, data: bytes | None = None, bucket: str = "vfx-assets") -> str:
        return self.pipeline.upload_input(name, self.media[name] if data is None else data, bucket, self.user)

    def http(self, path: str, host: str = "media.test") -> str:
        return self.server.url(path, host)

    def redirect_to(self, target: str) -> str:
        return self.http(f"/redirect?to={target}")


Build = Callable[[Ctx], Any]
S3_CLIP = "s3://vfx-assets/u/a.mp4"

# (case id, job type, input_data builder, expected message fragment)
SENSOR_CASES: list[tuple[str, str, Build, str]] = [
    ("unknown-type", "sharpen", lambda c: {"file_url": S3_CLIP}, "unknown job type 'sharpen'"),
    ("empty-type", "", lambda c: {"file_url": S3_CLIP}, "unknown job type ''"),
    ("type-case", "ROTO", lambda c: {"file_url": S3_CLIP}, "unknown job type 'ROTO'"),
    ("input-list", "roto", lambda c: ["not", "an", "object"], "input_data must be a JSON object"),
    ("input-string", "roto", lambda c: S3_CLIP, "input_data must be a JSON object"),
    ("input-null", "roto", lambda c: None, "input_data must be a JSON object"),
    ("no-url", "roto", lambda c: {"settings": {}}, "input_data.file_url is missing"),
    ("url-number", "roto", lambda c: {"file_url": 42}, "input_data.file_url is missing or not a string"),
    ("url-blank", "roto", lambda c: {"file_url": "   "}, "input_data.file_url is missing"),
    ("url-object", "roto", lambda c: {"file_url": {"bucket": "vfx-assets"}}, "file_url is missing or not a string"),
    ("settings-string", "roto", lambda c: {"file_url": S3_CLIP, "settings": "fast"}, "settings must be a JSON object"),
    ("settings-list", "audio-clean", lambda c: {"file_url": S3_CLIP, "settings": [1]}, "settings must be a JSON object"),
    ("foreign-host", "roto", lambda c: {"file_url": "https://evil.example.com/a.mp4"}, "unsupported file_url"),
    ("metadata-ip", "roto", lambda c: {"file_url": "http://169.254.169.254/latest/meta-data/"}, "unsupported file_url"),
    ("loopback-ip", "roto", lambda c: {"file_url": f"http://127.0.0.1:{c.server.port}/clip.mp4"}, "unsupported file_url"),
    ("localhost", "roto", lambda c: {"file_url": f"http://localhost:{c.server.port}/clip.mp4"}, "unsupported file_url"),
    ("ipv6-loopback", "roto", lambda c: {"file_url": f"http://[::1]:{c.server.port}/clip.mp4"}, "unsupported file_url"),
    ("decimal-ip", "roto", lambda c: {"file_url": "http://2130706433/clip.mp4"}, "unsupported file_url"),
    ("file-scheme", "roto", lambda c: {"file_url": "file:///etc/passwd"}, "unsupported file_url"),
    ("gopher", "roto", lambda c: {"file_url": "gopher://media.test/1"}, "unsupported file_url"),
    ("suffix-trick", "roto", lambda c: {"file_url": "http://media.test.evil.com/a.mp4"}, "unsupported file_url"),
    ("userinfo-trick", "roto", lambda c: {"file_url": "http://media.test@evil.com/a.mp4"}, "unsupported file_url"),
    ("credentials", "roto", lambda c: {"file_url": "http://me:pw@media.test/a.mp4"}, "must not contain credentials"),
    ("bad-ipv6", "roto", lambda c: {"file_url": "http://[::1/a.mp4"}, "not a valid URL"),
    ("bad-port", "roto", lambda c: {"file_url": "http://media.test:99999/a.mp4"}, "not a valid URL"),
    ("secret-bucket", "roto", lambda c: {"file_url": "s3://secret-bucket/a.mp4"}, "not an input bucket"),
    ("intermediates", "roto", lambda c: {"file_url": "s3://pipeline-intermediates/x/y"}, "not an input bucket"),
    ("empty-key", "roto", lambda c: {"file_url": "s3://vfx-assets/"}, "invalid object key"),
    ("dotdot-key", "roto", lambda c: {"file_url": "s3://vfx-assets/a/../../b.mp4"}, "invalid object key"),
    ("other-users-output", "roto", lambda c: {"file_url": f"s3://outputs/{uuid.uuid4()}/j/a1/00-out.mp4"},
     "file_url points to another user's output"),
    ("roto-unknown", "roto", lambda c: {"file_url": S3_CLIP, "settings": {"smothing": 0.5}}, "unknown setting 'smothing'"),
    ("roto-range", "roto", lambda c: {"file_url": S3_CLIP, "settings": {"smoothing": 2}}, "invalid setting 'smoothing'"),
    ("roto-enum", "roto", lambda c: {"file_url": S3_CLIP, "settings": {"format": "gif"}}, "invalid setting 'format'"),
    ("roto-description-type", "roto", lambda c: {"file_url": S3_CLIP, "settings": {"description": 5}},
     "invalid setting 'description'"),
    ("grade-range", "color-grade", lambda c: {"file_url": S3_CLIP, "settings": {"exposure": 9}}, "invalid setting 'exposure'"),
    ("grade-type", "color-grade", lambda c: {"file_url": S3_CLIP, "settings": {"crf": "high"}}, "invalid setting 'crf'"),
    ("grade-unknown", "color-grade", lambda c: {"file_url": S3_CLIP, "settings": {"brightness": 1}},
     "unknown setting 'brightness'"),
    ("grade-two-looks", "color-grade",
     lambda c: {"file_url": S3_CLIP, "settings": {"preset": "noir", "lut_url": "s3://vfx-assets/u/l.cube"}},
     "set either lut_url or preset"),
    ("audio-enum", "audio-clean", lambda c: {"file_url": S3_CLIP, "settings": {"denoise": "magic"}}, "invalid setting 'denoise'"),
    ("audio-range", "audio-clean", lambda c: {"file_url": S3_CLIP, "settings": {"loudness_lufs": 0}},
     "invalid setting 'loudness_lufs'"),
    ("audio-unknown", "audio-clean", lambda c: {"file_url": S3_CLIP, "settings": {"gain": 3}}, "unknown setting 'gain'"),
]

RUN_CASES: list[tuple[str, str, Build, str]] = [
    ("missing-object", "roto", lambda c: {"file_url": f"s3://vfx-assets/{c.user}/gone.mp4"}, "input file not found"),
    ("oversize-object", "roto", lambda c: {"file_url": c.upload("big.mp4", b"\0" * 600_000)},
     "input is too large (585.9 KiB); the limit is 488.3 KiB"),
    ("empty-object", "roto", lambda c: {"file_url": c.upload("empty.mp4")}, "could not decode"),
    ("garbage", "roto", lambda c: {"file_url": c.upload("garbage.mp4")}, "could not decode"),
    ("truncated", "color-grade", lambda c: {"file_url": c.upload("truncated.mp4")}, "could not decode"),
    ("text-as-wav", "audio-clean", lambda c: {"file_url": c.upload("notes.wav", b"RIFF but not really", "audio-uploads")},
     "could not decode"),
    ("fake-png", "color-grade", lambda c: {"file_url": c.upload("fake.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 500)},
     "could not decode"),
    ("audio-to-roto", "roto", lambda c: {"file_url": c.upload("take.wav")}, "roto needs video or image input, got audio"),
    ("audio-to-grade", "color-grade", lambda c: {"file_url": c.upload("take.wav")},
     "color-grade needs video or image input, got audio"),
    ("image-to-audio", "audio-clean", lambda c: {"file_url": c.upload("still.png", bucket="audio-uploads")},
     "audio-clean needs audio or video input, got image"),
    ("long-video", "roto", lambda c: {"file_url": c.upload("long.mp4")}, "input is 2.0 s long; roto accepts at most 1.0 s"),
    ("long-audio", "audio-clean", lambda c: {"file_url": c.upload("long.wav", bucket="audio-uploads")},
     "input is 2.0 s long; audio-clean accepts at most 1.0 s"),
    ("http-404", "roto", lambda c: {"file_url": c.http("/missing.mp4")}, "failed with HTTP 404"),
    ("http-403", "roto", lambda c: {"file_url": c.http("/status/403")}, "failed with HTTP 403"),
    ("http-metadata-name", "roto", lambda c: {"file_url": "http://meta.test/latest/meta-data/"},
     "host 'meta.test' resolves to a non-public address"),
    ("http-lan-name", "roto", lambda c: {"file_url": "http://lan.test/a.mp4"}, "resolves to a non-public address"),
    ("http-loopback-alias", "roto", lambda c: {"file_url": f"http://loop2.test:{c.server.port}/clip.mp4"},
     "resolves to a non-public address"),
    ("http-mixed-answers", "roto", lambda c: {"file_url": "http://mixed.test/a.mp4"}, "resolves to a non-public address"),
    ("redirect-metadata-ip", "roto", lambda c: {"file_url": c.redirect_to("http://169.254.169.254/latest/meta-data/")},
     "host '169.254.169.254' is not an allowed input host"),
    ("redirect-metadata-name", "roto", lambda c: {"file_url": c.redirect_to("http://meta.test/latest/")},
     "resolves to a non-public address"),
    ("redirect-ten", "roto", lambda c: {"file_url": c.redirect_to("http://ten.test/a.mp4")}, "resolves to a non-public address"),
    ("redirect-v6-loopback", "roto", lambda c: {"file_url": c.redirect_to("http://v6loop.test/a.mp4")},
     "resolves to a non-public address"),
    ("redirect-v4-mapped", "roto", lambda c: {"file_url": c.redirect_to("http://mapped.test/a.mp4")},
     "resolves to a non-public address"),
    ("redirect-loopback-ip", "roto", lambda c: {"file_url": c.redirect_to(f"http://127.0.0.1:{c.server.port}/clip.mp4")},
     "host '127.0.0.1' is not an allowed input host"),
    ("redirect-file", "roto", lambda c: {"file_url": c.redirect_to("file:///etc/passwd")}, "only http and https URLs"),
    ("redirect-s3", "roto", lambda c: {"file_url": c.redirect_to("s3://vfx-assets/u/a.mp4")}, "only http and https URLs"),
    ("redirect-foreign", "roto", lambda c: {"file_url": c.redirect_to("https://evil.example.com/a.mp4")},
     "is not an allowed input host"),
    ("redirect-loop", "roto", lambda c: {"file_url": c.http("/loop")}, "redirected more than 5 times"),
    ("http-declared-huge", "roto", lambda c: {"file_url": c.http("/declared-huge")}, "input is too large (10.0 GiB)"),
    ("http-endless", "roto", lambda c: {"file_url": c.http("/endless")}, "input is too large (more than 488.3 KiB)"),
    ("http-audio-to-roto", "roto", lambda c: {"file_url": c.http("/take.wav")}, "roto needs video or image input, got audio"),
    ("http-garbage", "color-grade", lambda c: {"file_url": c.http("/garbage.mp4")}, "could not decode garbage.mp4"),
]

GOOD_CASES: list[tuple[str, str, Build]] = [
    ("s3-video", "roto", lambda c: {"file_url": c.upload("clip.mp4"), "settings": {"description": "the actor"}}),
    ("s3-image", "color-grade", lambda c: {"file_url": c.upload("still.png"), "settings": {"preset": "noir"}}),
    ("s3-audio", "audio-clean", lambda c: {"file_url": c.upload("take.wav", bucket="audio-uploads"),
                                           "settings": {"denoise": "spectral"}}),
    ("http-video", "roto", lambda c: {"file_url": c.http("/clip.mp4?sig=abc")}),
    ("http-redirected", "audio-clean", lambda c: {"file_url": c.redirect_to("/take.wav")}),
]


@pytest.fixture
def server(media: dict[str, bytes]) -> Iterator[LocalServer]:  # noqa: F811 - the fixture above
    with LocalServer() as s:
        for name in ("clip.mp4", "take.wav", "garbage.mp4"):
            s.files[f"/{name}"] = media[name]
        yield s


@pytest.fixture
def bad_pipeline(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    """The pipeline with tight limits and the loopback-capable input policy."""
    monkeypatch.setenv("NOLLY_ALLOWED_INPUT_HOSTS", ALLOWED)
    monkeypatch.setenv("NOLLY_MAX_INPUT_BYTES", str(MAX_BYTES))
    for suffix in ("ROTO", "COLOR_GRADE", "AUDIO_CLEAN"):
        monkeypatch.setenv(f"NOLLY_MAX_DURATION_SECONDS_{suffix}", "1")
    settings = Settings.from_env()
    base = build_definitions(settings)
    production = base.resources["inputs"]
    defs = Definitions(
        assets=base.assets, jobs=base.jobs, sensors=base.sensors,
        resources={**base.resources, "inputs": LoopbackInputPolicy(**production.model_dump())},
    )
    for ref in (ROTO_VERSION, AUDIO_VERSION, "studio/grade"):
        pipeline.fake.set_behavior(ref, Behavior(starting=0, processing=0))
    return dataclasses.replace(pipeline, settings=settings, defs=defs)


def test_production_policy_has_no_hatch(bad_pipeline: Pipeline) -> None:
    policy = build_definitions(bad_pipeline.settings).resources["inputs"]
    assert type(policy) is InputPolicyResource and policy.fetcher()._test_addresses == frozenset()


def test_bad_inputs_fail_readably_while_good_jobs_succeed(
    bad_pipeline: Pipeline, server: LocalServer, media: dict[str, bytes], user_id: uuid.UUID  # noqa: F811
) -> None:
    p = bad_pipeline
    ctx = Ctx(p, server, user_id, media)
    assert len(SENSOR_CASES) + len(RUN_CASES) >= 50
    good = {name: insert_row(p, t, build(ctx), user_id) for name, t, build in GOOD_CASES}
    bad = {name: (insert_row(p, t, build(ctx), user_id), fragment)
           for name, t, build, fragment in [*SENSOR_CASES, *RUN_CASES]}

    requests = p.tick()
    dispatched = {r.partition_key for r in requests}
    sensor_refused = {name for name, (job_id, _) in bad.items() if str(job_id) not in dispatched}
    assert sensor_refused == {name for name, *_ in SENSOR_CASES}
    for request in requests:
        p.execute(request)

    problems = []
    scratch = str(p.settings.work_dir)
    for name, (job_id, fragment) in bad.items():
        row = p.store.get(job_id)
        message = row.error_message or ""
        notes = p.store.notifications_for(job_id)
        if (row.status != "failed" or fragment not in message or "Traceback" in message or scratch in message
                or [(n["kind"], n["message"]) for n in notes] != [("job_failed", message)]):
            problems.append(f"{name}: status={row.status} message={message!r} notes={len(notes)}")
    assert not problems, "\n".join(problems)

    for name, job_id in good.items():
        row = p.store.get(job_id)
        assert row.status == "done", (name, row.error_message)
        assert [n["kind"] for n in p.store.notifications_for(job_id)] == ["job_done"]
    # The HTTP good jobs reached the server under their names, never as bare addresses.
    assert server.hosts and all(h.startswith("media.test:") for h in server.hosts)
