"""The Replicate predictor against a local fake of Replicate's API, through the real client."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import replicate

from nolly_pipeline.errors import InputError, PermanentError, TransientError
from nolly_pipeline.predictors.base import PredictionRequest
from nolly_pipeline.predictors.replicate_backend import ReplicatePredictor
from nolly_pipeline.predictors.replicate_model import ReplicateModel
from nolly_pipeline_tests.fakes.replicate_api import Behavior, FakeReplicate

VERSION = "a" * 64
MODEL = ReplicateModel(ref=f"studio/matting:{VERSION}", file_input="input_video", static_input={"output_type": "alpha-mask"})


def make_predictor(fake: FakeReplicate, token: str = "test-token", **kw: float) -> ReplicatePredictor:
    client = replicate.Client(api_token=token, base_url=fake.base_url)
    return ReplicatePredictor(client=client, model=MODEL, poll_seconds=kw.get("poll", 0.01),
                              timeout_seconds=kw.get("timeout", 10))


def make_request(tmp_path: Path, source_url: str | None = None, settings: dict | None = None) -> PredictionRequest:
    src = tmp_path / "clip.mp4"
    src.write_bytes(b"\x00\x00\x00\x18ftypmp42 fake video")
    beats: list[tuple[int, int]] = []
    return PredictionRequest(
        job_id=uuid.uuid4(), job_type="roto", source=src, source_url=source_url,
        settings=settings or {}, work_dir=tmp_path / "out",
        progress=lambda d, t: beats.append((d, t)), fetch_asset=lambda url: Path(url),
    )


def test_success_uploads_file_polls_and_downloads_output(fake_replicate: FakeReplicate, tmp_path: Path) -> None:
    fake_replicate.set_behavior(VERSION, Behavior(starting=2, processing=3))
    result = make_predictor(fake_replicate).predict(make_request(tmp_path))
    (out,) = result.files
    assert out.role == "output"
    assert out.path.read_bytes() == b"FAKE-REPLICATE:" + (tmp_path / "clip.mp4").read_bytes()
    pid = result.metadata["replicate_prediction_id"]
    record = fake_replicate.predictions[pid]
    assert record.status == "succeeded" and record.polls >= 5
    assert record.input["output_type"] == "alpha-mask"
    assert fake_replicate.requests_matching("POST", "/v1/files")  # no public URL: uploaded


def test_public_source_url_is_passed_instead_of_uploading(fake_replicate: FakeReplicate, tmp_path: Path) -> None:
    url = fake_replicate.serve_file("clip.mp4", b"remote bytes")
    fake_replicate.set_behavior(VERSION, Behavior(starting=0, processing=1))
    result = make_predictor(fake_replicate).predict(make_request(tmp_path, source_url=url))
    assert result.files[0].path.read_bytes() == b"FAKE-REPLICATE:remote bytes"
    assert not fake_replicate.requests_matching("POST", "/v1/files")


def test_output_download_carries_no_credentials(fake_replicate: FakeReplicate, tmp_path: Path) -> None:
    fake_replicate.set_behavior(VERSION, Behavior(starting=0, processing=0))
    make_predictor(fake_replicate).predict(make_request(tmp_path))
    deliveries = fake_replicate.requests_matching("GET", "/delivery/*")
    assert deliveries and all("authorization" not in {k.lower() for k in r.headers} for r in deliveries)


def test_list_and_dict_outputs_become_several_files(fake_replicate: FakeReplicate, tmp_path: Path) -> None:
    fake_replicate.set_behavior(VERSION, Behavior(starting=0, processing=0, output_kind="dict",
                                                   output_keys=("foreground", "alpha")))
    result = make_predictor(fake_replicate).predict(make_request(tmp_path))
    assert [f.role for f in result.files] == ["foreground", "alpha"]


@pytest.mark.parametrize(
    "final, expected",
    [("failed", "Replicate prediction failed: CUDA out of memory"),
     ("canceled", "Replicate prediction canceled"),
     ("aborted", "Replicate prediction aborted")],
)
def test_unsuccessful_predictions_fail_permanently(
    fake_replicate: FakeReplicate, tmp_path: Path, final: str, expected: str
) -> None:
    fake_replicate.set_behavior(VERSION, Behavior(final_status=final, error="CUDA out of memory"))  # type: ignore[arg-type]
    with pytest.raises(PermanentError, match=expected):
        make_predictor(fake_replicate).predict(make_request(tmp_path))


def test_deadline_cancels_the_remote_prediction(fake_replicate: FakeReplicate, tmp_path: Path) -> None:
    fake_replicate.set_behavior(VERSION, Behavior(never_finishes=True))
    with pytest.raises(PermanentError, match="timed out after 0.5 s and was canceled"):
        make_predictor(fake_replicate, timeout=0.5).predict(make_request(tmp_path))
    assert len(fake_replicate.canceled_ids) == 1


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_create_errors_are_transient(fake_replicate: FakeReplicate, tmp_path: Path, status: int) -> None:
    fake_replicate.inject("POST", "/v1/predictions", status, headers={"Retry-After": "1"})
    with pytest.raises(TransientError, match=f"HTTP {status}"):
        make_predictor(fake_replicate).predict(make_request(tmp_path, source_url="http://x/y.mp4"))


def test_create_connection_reset_is_transient(fake_replicate: FakeReplicate, tmp_path: Path) -> None:
    fake_replicate.inject_reset("POST", "/v1/predictions")
    with pytest.raises(TransientError, match="could not reach Replicate"):
        make_predictor(fake_replicate).predict(make_request(tmp_path, source_url="http://x/y.mp4"))


def test_poll_errors_are_ridden_out(fake_replicate: FakeReplicate, tmp_path: Path) -> None:
    """500/502 and resets on GET are not retried by the client; the poll loop keeps going."""
    fake_replicate.set_behavior(VERSION, Behavior(starting=1, processing=2))
    fake_replicate.inject("GET", "/v1/predictions/*", 500, times=2)
    fake_replicate.inject("GET", "/v1/predictions/*", 502, times=1)
    fake_replicate.inject_reset("GET", "/v1/predictions/*", times=1)
    fake_replicate.inject("GET", "/v1/predictions/*", 429, times=1, headers={"Retry-After": "0"})
    result = make_predictor(fake_replicate).predict(make_request(tmp_path))
    assert result.files[0].path.read_bytes().startswith(b"FAKE-REPLICATE:")
    assert len(fake_replicate.predictions) == 1  # one prediction, not one per error


def test_persistent_poll_errors_give_up_and_cancel(fake_replicate: FakeReplicate, tmp_path: Path) -> None:
    fake_replicate.set_behavior(VERSION, Behavior(never_finishes=True))
    fake_replicate.inject("GET", "/v1/predictions/*", 500, times=None)
    with pytest.raises(TransientError, match="HTTP 500 while polling"):
        make_predictor(fake_replicate).predict(make_request(tmp_path))
    assert len(fake_replicate.cancel_requests) == 1


def test_bad_token_and_rejected_input_are_permanent(fake_replicate: FakeReplicate, tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="refused the API token"):
        make_predictor(fake_replicate, token="wrong").predict(make_request(tmp_path, source_url="http://x/y"))
    fake_replicate.inject("POST", "/v1/predictions", 422, body={"detail": "input_video: bad format"})
    with pytest.raises(InputError, match="bad format"):
        make_predictor(fake_replicate).predict(make_request(tmp_path, source_url="http://x/y"))


def test_settings_map_and_official_model_path(fake_replicate: FakeReplicate, tmp_path: Path) -> None:
    model = ReplicateModel(ref="studio/denoise", file_input="input_audio", settings_map={"strength": "denoise_strength"})
    fake_replicate.set_behavior("studio/denoise", Behavior(starting=0, processing=0))
    predictor = ReplicatePredictor(client=replicate.Client(api_token="test-token", base_url=fake_replicate.base_url),
                                   model=model, poll_seconds=0.01)
    result = predictor.predict(make_request(tmp_path, settings={"strength": 0.7, "other": 1}))
    record = fake_replicate.predictions[result.metadata["replicate_prediction_id"]]
    assert record.create_path == "/v1/models/studio/denoise/predictions"
    assert record.input["denoise_strength"] == 0.7 and "other" not in record.input


def test_remote_error_text_loses_url_credentials(fake_replicate: FakeReplicate, tmp_path: Path) -> None:
    error = "could not fetch https://bucket.s3.amazonaws.com/a.mp4?X-Amz-Signature=abc123&X-Amz-Credential=KEY"
    fake_replicate.set_behavior(VERSION, Behavior(final_status="failed", error=error))
    with pytest.raises(PermanentError) as info:
        make_predictor(fake_replicate).predict(make_request(tmp_path))
    assert "https://bucket.s3.amazonaws.com/a.mp4" in info.value.message
    assert "abc123" not in info.value.message and "KEY" not in info.value.message
