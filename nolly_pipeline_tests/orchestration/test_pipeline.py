"""Sensor, ops, IO manager and hooks together, executed in process on real services."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from dagster import DagsterEventType

from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline.db.tables import jobs
from nolly_pipeline.job_types import JOB_TYPES
from nolly_pipeline.processing.media import probe
from nolly_pipeline_tests.fakes.replicate_api import Behavior, FakeReplicate
from nolly_pipeline_tests.fakes.versions import AUDIO_VERSION, ROTO_VERSION
from nolly_pipeline_tests.media import tiny_video, tiny_wav
from nolly_pipeline_tests.orchestration.conftest import Pipeline, pipeline_env, running_pipeline
from nolly_pipeline_tests.seed import insert_job


def insert_row(p: Pipeline, job_type: str, input_data: object, user: uuid.UUID) -> uuid.UUID:
    """Insert as the frontend does: plain SQL with the seed's columns only."""
    with p.store.engine.begin() as conn:
        return insert_job(conn, job_type, input_data, user)


def test_pending_row_becomes_done_with_output_and_notification(pipeline: Pipeline, user_id: uuid.UUID) -> None:
    pipeline.fake.set_behavior(ROTO_VERSION, Behavior(starting=1, processing=2))
    url = pipeline.upload_input("clip.mp4", tiny_video(), user=user_id)
    job_id = insert_row(pipeline, "roto", {"file_url": url, "settings": {}}, user_id)

    (request,) = pipeline.tick()
    assert request.run_key == f"{job_id}:1"
    assert request.tags["nolly/job_id"] == str(job_id) and request.tags["nolly/user_id"] == str(user_id)
    assert pipeline.tick() == []  # already claimed: not dispatched twice
    result = pipeline.execute(request)
    assert result.success

    row = pipeline.store.get(job_id)
    assert row.status == "done" and row.completed_at and row.started_at and row.error_message is None
    out = row.output_data
    assert out["output_url"] == f"s3://outputs/{out['storage_path']}"
    assert out["storage_path"].startswith(f"{user_id}/{job_id}/a1/")
    dest = pipeline.settings.work_dir.parent / "check.bin"
    pipeline.s3.download("outputs", out["storage_path"], dest)
    assert dest.read_bytes() == b"FAKE-REPLICATE:" + tiny_video()
    (note,) = pipeline.store.notifications_for(job_id)
    assert note["kind"] == "job_done" and note["user_id"] == user_id and note["title"] == "Rotoscoping finished"


def test_model_failure_is_written_back_readably(pipeline: Pipeline, user_id: uuid.UUID) -> None:
    pipeline.fake.set_behavior("studio/grade", Behavior(final_status="failed", error="unsupported pixel format"))
    url = pipeline.upload_input("clip.mp4", tiny_video(), user=user_id)
    job_id = insert_row(pipeline, "color-grade", {"file_url": url, "settings": {}}, user_id)
    (request,) = pipeline.tick()
    assert not pipeline.execute(request).success
    row = pipeline.store.get(job_id)
    assert row.status == "failed"
    assert row.error_message == "Replicate prediction failed: unsupported pixel format"
    (note,) = pipeline.store.notifications_for(job_id)
    assert note["kind"] == "job_failed" and note["message"] == row.error_message


def test_missing_input_object_fails_with_message(pipeline: Pipeline, user_id: uuid.UUID) -> None:
    job_id = insert_row(pipeline, "roto", {"file_url": "s3://vfx-assets/nobody/gone.mp4"}, user_id)
    (request,) = pipeline.tick()
    assert not pipeline.execute(request).success
    assert pipeline.store.get(job_id).error_message == "input file not found: vfx-assets/nobody/gone.mp4"


def test_transient_replicate_error_is_retried_inside_the_run(pipeline: Pipeline, user_id: uuid.UUID) -> None:
    pipeline.fake.set_behavior(ROTO_VERSION, Behavior(starting=0, processing=1))
    pipeline.fake.inject("POST", "/v1/predictions", 503, times=1)
    url = pipeline.upload_input("clip.mp4", tiny_video(), user=user_id)
    job_id = insert_row(pipeline, "roto", {"file_url": url}, user_id)
    (request,) = pipeline.tick()
    result = pipeline.execute(request)
    assert result.success
    retries = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retries) == 1
    assert pipeline.store.get(job_id).status == "done"
    assert len(pipeline.store.notifications_for(job_id)) == 1


@pytest.mark.parametrize(
    "job_type, input_data, message",
    [
        ("sharpen", {"file_url": "s3://vfx-assets/u/a.mp4"}, "unknown job type 'sharpen'"),
        ("roto", ["not", "an", "object"], "input_data must be a JSON object"),
        ("roto", {"settings": {}}, "input_data.file_url is missing"),
        ("roto", {"file_url": "https://evil.example.com/a.mp4"}, "unsupported file_url"),
        ("roto", {"file_url": "s3://vfx-assets/u/a.mp4", "settings": "fast"}, "settings must be a JSON object"),
    ],
)
def test_malformed_rows_fail_in_the_tick_while_good_rows_dispatch(
    pipeline: Pipeline, user_id: uuid.UUID, job_type: str, input_data: object, message: str
) -> None:
    good = insert_row(pipeline, "roto", {"file_url": "s3://vfx-assets/u/ok.mp4"}, user_id)
    bad = insert_row(pipeline, job_type, input_data, user_id)
    requests = pipeline.tick()
    assert [r.partition_key for r in requests] == [str(good)]
    row = pipeline.store.get(bad)
    assert row.status == "failed" and message in row.error_message
    assert len(pipeline.store.notifications_for(bad)) == 1


def test_retry_from_frontend_launches_a_new_attempt(pipeline: Pipeline, user_id: uuid.UUID) -> None:
    pipeline.fake.set_behavior(ROTO_VERSION, Behavior(final_status="failed", error="flaky GPU"))
    url = pipeline.upload_input("clip.mp4", tiny_video(), user=user_id)
    job_id = insert_row(pipeline, "roto", {"file_url": url}, user_id)
    (first,) = pipeline.tick()
    pipeline.execute(first)
    assert pipeline.store.get(job_id).status == "failed"
    with pipeline.store.engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(status="pending"))
    pipeline.fake.set_behavior(ROTO_VERSION, Behavior(starting=0, processing=0))
    (second,) = pipeline.tick()
    assert second.run_key == f"{job_id}:2"
    assert pipeline.execute(second).success
    row = pipeline.store.get(job_id)
    assert row.status == "done" and row.attempt == 2 and "/a2/" in row.output_data["storage_path"]
    assert [n["kind"] for n in pipeline.store.notifications_for(job_id)] == ["job_failed", "job_done"]


def test_signed_output_urls_expire_and_serve_the_file(
    pipeline: Pipeline, user_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    from nolly_pipeline.config import Settings
    from nolly_pipeline.definitions import build_definitions

    monkeypatch.setenv("NOLLY_OUTPUT_URL_MODE", "signed")
    monkeypatch.setenv("NOLLY_SIGNED_URL_SECONDS", "600")
    pipeline.defs = build_definitions(Settings.from_env())
    pipeline.fake.set_behavior(ROTO_VERSION, Behavior(starting=0, processing=0))
    url = pipeline.upload_input("clip.mp4", tiny_video(), user=user_id)
    job_id = insert_row(pipeline, "roto", {"file_url": url}, user_id)
    (request,) = pipeline.tick()
    assert pipeline.execute(request).success
    output_url = pipeline.store.get(job_id).output_data["output_url"]
    assert output_url.startswith("http://127.0.0.1") and "Expires=" in output_url
    assert httpx.get(output_url).content == b"FAKE-REPLICATE:" + tiny_video()


def test_a_token_alone_runs_every_type(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pg_store: JobStore, postgres_url: str,
    s3_endpoint: str, fake_replicate: FakeReplicate, user_id: uuid.UUID,
) -> None:
    """REPLICATE_API_TOKEN and nothing else: types with a registry model go to Replicate, colour grade
    (no model) stays local instead of failing every job."""
    for job_type in JOB_TYPES.values():
        for prefix in ("NOLLY_BACKEND_", "NOLLY_REPLICATE_MODEL_", "NOLLY_REPLICATE_INPUT_"):
            monkeypatch.delenv(prefix + job_type.env_suffix, raising=False)
    env = pipeline_env(postgres_url, s3_endpoint, fake_replicate, tmp_path / "dagster_home")
    del env["NOLLY_REPLICATE_MODEL_COLOR_GRADE"], env["NOLLY_REPLICATE_INPUT_COLOR_GRADE"]
    with running_pipeline(monkeypatch, env, pg_store, s3_endpoint, fake_replicate) as p:
        assert p.settings.backends == {"roto": "replicate", "color-grade": "local", "audio-clean": "replicate"}
        for version in (ROTO_VERSION, AUDIO_VERSION):
            p.fake.set_behavior(version, Behavior(starting=0, processing=1))
        sources = {"roto": ("vfx-assets", "clip.mp4", tiny_video()),
                   "color-grade": ("vfx-assets", "grade.mp4", tiny_video(7)),
                   "audio-clean": ("audio-uploads", "take.wav", tiny_wav())}
        ids = {
            job_type: insert_row(p, job_type, {"file_url": p.upload_input(name, data, bucket, user_id)}, user_id)
            for job_type, (bucket, name, data) in sources.items()
        }
        requests = p.tick()
        assert sorted(r.partition_key for r in requests) == sorted(str(i) for i in ids.values())
        for request in requests:
            assert p.execute(request).success, request.job_name
        rows = {job_type: p.store.get(job_id) for job_type, job_id in ids.items()}
        assert {t: (r.status, r.error_message) for t, r in rows.items()} == {t: ("done", None) for t in ids}
        assert sorted(rec.version for rec in p.fake.predictions.values()) == sorted((ROTO_VERSION, AUDIO_VERSION))
        graded = tmp_path / "graded.mp4"
        p.s3.download("outputs", rows["color-grade"].output_data["storage_path"], graded)
        assert probe(graded).kind == "video"  # graded on this machine: a real MP4, not the fake's echo
