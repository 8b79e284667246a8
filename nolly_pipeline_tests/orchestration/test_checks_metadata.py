"""Asset checks, materialization metadata and previews of finished jobs, in process on PostgreSQL,
moto's S3 server and the Replicate fake."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from dagster import AssetCheckSeverity, AssetKey, ExecuteInProcessResult

from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline.processing.checks import CHECKS
from nolly_pipeline.processing.previews import MAX_BYTES
from nolly_pipeline_tests.fakes.replicate_api import FakeReplicate
from nolly_pipeline_tests.media import tiny_video, tiny_wav
from nolly_pipeline_tests.orchestration.conftest import Pipeline, pipeline_env, running_pipeline
from nolly_pipeline_tests.seed import insert_job


@pytest.fixture
def local_pipeline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pg_store: JobStore, postgres_url: str,
    s3_endpoint: str, fake_replicate: FakeReplicate,
) -> Pipeline:
    env = {**pipeline_env(postgres_url, s3_endpoint, fake_replicate, tmp_path / "dagster_home"),
           "NOLLY_BACKEND_COLOR_GRADE": "local", "NOLLY_BACKEND_AUDIO_CLEAN": "local"}
    with running_pipeline(monkeypatch, env, pg_store, s3_endpoint, fake_replicate) as p:
        yield p


def run_job(p: Pipeline, job_type: str, name: str, data: bytes, user: uuid.UUID,
            settings: dict | None = None) -> tuple[uuid.UUID, ExecuteInProcessResult]:
    bucket = "audio-uploads" if job_type == "audio-clean" else "vfx-assets"
    url = p.upload_input(name, data, bucket, user)
    with p.store.engine.begin() as conn:
        job_id = insert_job(conn, job_type, {"file_url": url, "settings": settings or {}}, user)
    (request,) = p.tick()
    result = p.execute(request)
    assert result.success
    return job_id, result


def evaluations(result: ExecuteInProcessResult) -> dict[str, object]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def materialization_metadata(result: ExecuteInProcessResult, asset: str) -> dict:
    (event,) = result.get_asset_materialization_events()
    assert event.asset_key == AssetKey(asset)
    return event.materialization.metadata


@pytest.mark.parametrize("job_type,name,data,settings", [
    ("color-grade", "clip.mp4", tiny_video(12), {"preset": "warm"}),
    ("audio-clean", "take.wav", tiny_wav(1.0), {"denoise": "off"}),
])
def test_a_local_job_passes_its_checks_and_shows_numbers_and_a_preview(
    local_pipeline: Pipeline, user_id: uuid.UUID, tmp_path: Path, job_type: str, name: str, data: bytes,
    settings: dict,
) -> None:
    job_id, result = run_job(local_pipeline, job_type, name, data, user_id, settings)
    row = local_pipeline.store.get(job_id)
    assert row.status == "done"
    out = row.output_data

    # Asset checks: every declared check, evaluated on this materialization, all passed.
    found = evaluations(result)
    assert set(found) == set(CHECKS[job_type])
    assert all(e.passed and e.severity == AssetCheckSeverity.WARN for e in found.values())
    assert all(e.target_materialization_data is not None for e in found.values())
    # ... and the same results for the frontend.
    assert [(c["name"], c["passed"]) for c in out["metadata"]["checks"]] == [(n, True) for n in CHECKS[job_type]]

    # The preview: published next to the outputs, listed with role "preview", a small real PNG.
    (preview,) = [f for f in out["files"] if f["role"] == "preview"]
    assert preview["content_type"] == "image/png" and 0 < preview["bytes"] <= MAX_BYTES
    assert out["output_url"] != preview["url"] and out["files"][0]["role"] != "preview"
    assert preview["storage_path"].startswith(f"{user_id}/{job_id}/a1/")
    local_pipeline.s3.download("outputs", preview["storage_path"], tmp_path / "preview.png")
    assert cv2.imread(str(tmp_path / "preview.png")) is not None

    # Metadata at a glance on the materialization.
    meta = materialization_metadata(result, job_type.replace("-", "_"))
    for key in ("input_duration_seconds", "processing_seconds", "realtime_factor"):
        assert meta[key].value > 0, key
    assert meta["attempt"].value == 1 and meta["output_bytes"].value == out["files"][0]["bytes"]
    assert meta["backend"].value == "local" and meta["model"].value
    assert meta["output_url"].url == out["output_url"]
    assert meta["output_data"].data == out  # what the reconciler reads
    markdown = meta["preview"].md_str
    assert markdown.startswith("![preview](data:image/png;base64,") and len(markdown) < 150_000
    png = base64.b64decode(markdown.split(",", 1)[1].rstrip(")"))
    assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR) is not None
    if job_type == "audio-clean":
        assert meta["output_lufs"].value == pytest.approx(-16.0, abs=1.0)
        assert meta["output_true_peak_db"].value <= -1.4 and "input_lufs" in meta
    else:
        assert meta["frames"].value == 12 and meta["fps"].value == 25


def test_a_failed_check_is_a_warning_and_the_job_is_done(pipeline: Pipeline, user_id: uuid.UUID) -> None:
    """The Replicate fake echoes the input behind a prefix: nothing decodes. Every check fails
    as a warning, the job still ends done, and there is simply no preview."""
    job_id, result = run_job(pipeline, "color-grade", "clip.mp4", tiny_video(), user_id)
    row = pipeline.store.get(job_id)
    assert row.status == "done" and row.error_message is None
    found = evaluations(result)
    assert set(found) == set(CHECKS["color-grade"])
    assert all(not e.passed and e.severity == AssetCheckSeverity.WARN for e in found.values())
    checks = row.output_data["metadata"]["checks"]
    assert [c["passed"] for c in checks] == [False] * 3
    assert all("does not decode" in c["description"] and c["severity"] == "warn" for c in checks)
    assert [f["role"] for f in row.output_data["files"]] == ["output"]
    meta = materialization_metadata(result, "color_grade")
    assert "preview" not in meta and meta["checks_passed"].value == "0/3"
    assert meta["model"].value == "studio/grade" and meta["backend"].value == "replicate"


def test_a_reused_result_carries_the_checks_and_preview_of_the_job_it_copies(
    local_pipeline: Pipeline, user_id: uuid.UUID
) -> None:
    first, _ = run_job(local_pipeline, "color-grade", "clip.mp4", tiny_video(9), user_id, {"preset": "cool"})
    second, result = run_job(local_pipeline, "color-grade", "again.mp4", tiny_video(9), user_id, {"preset": "cool"})
    row = local_pipeline.store.get(second)
    assert row.status == "done" and row.output_data["reused_from"] == str(first)
    assert row.output_data["metadata"]["checks"] == local_pipeline.store.get(first).output_data["metadata"]["checks"]
    assert [f["role"] for f in row.output_data["files"]][-1] == "preview"
    assert {n: e.passed for n, e in evaluations(result).items()} == {n: True for n in CHECKS["color-grade"]}
    meta = materialization_metadata(result, "color_grade")
    assert meta["preview"].md_str.startswith("![preview](data:image/png;base64,")
    assert meta["reused_from"].value == str(first)
