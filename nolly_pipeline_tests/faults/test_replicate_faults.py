"""Replicate faults through the whole pipeline (sensor, ops, hooks), in process, on real services.

Each fault ends as designed: ``done`` after retries, or ``failed`` with a readable message,
and always exactly one notification. Transient errors on create are retried by the op's
RetryPolicy; errors on polls are ridden out inside the poll loop (one prediction only).
"""

from __future__ import annotations

import time
import uuid

import pytest
from dagster import DagsterEventType, RetryPolicy

from nolly_pipeline.config import Settings
from nolly_pipeline.definitions import build_definitions
from nolly_pipeline_tests.fakes.replicate_api import Behavior
from nolly_pipeline_tests.fakes.versions import ROTO_VERSION
from nolly_pipeline_tests.media import tiny_video
from nolly_pipeline_tests.orchestration.conftest import Pipeline
from nolly_pipeline_tests.orchestration.test_pipeline import insert_row

CREATE = "/v1/predictions"
POLL = "/v1/predictions/*"


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Op retries after 0.1 s instead of 2/6/14/30 s, so the full retry budget fits a fast test.
    The policy itself (4 retries, only TransientError) is unchanged."""
    monkeypatch.setattr(RetryPolicy, "calculate_delay", lambda self, attempt_num: 0.1)


def run_job(p: Pipeline, user: uuid.UUID, job_type: str = "roto") -> tuple[uuid.UUID, object, float]:
    url = p.upload_input("clip.mp4", tiny_video(), user=user)
    job_id = insert_row(p, job_type, {"file_url": url, "settings": {}}, user)
    (request,) = p.tick()
    started = time.monotonic()
    result = p.execute(request)
    return job_id, result, time.monotonic() - started


def retries(result: object) -> int:
    return sum(1 for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY)  # type: ignore[attr-defined]


def assert_done_once(p: Pipeline, job_id: uuid.UUID) -> None:
    row = p.store.get(job_id)
    assert row.status == "done", row.error_message
    assert row.error_message is None and row.output_data["output_url"]
    assert [n["kind"] for n in p.store.notifications_for(job_id)] == ["job_done"]


TRANSIENT_FAULTS = [
    pytest.param({"status": 429, "headers": {"Retry-After": "1"}}, id="429-retry-after"),
    pytest.param({"status": 500}, id="500"),
    pytest.param({"status": 502}, id="502"),
    pytest.param({"status": 503}, id="503"),
    pytest.param({"reset": True}, id="connection-reset"),
]


def inject(p: Pipeline, method: str, path: str, fault: dict, times: int) -> None:
    """One of TRANSIENT_FAULTS on the next ``times`` requests to ``method path``."""
    if fault.get("reset"):
        p.fake.inject_reset(method, path, times=times)
    else:
        p.fake.inject(method, path, fault["status"], times=times, headers=fault.get("headers"))


def assert_failed_once(p: Pipeline, job_id: uuid.UUID, message: str) -> None:
    row = p.store.get(job_id)
    assert row.status == "failed"
    assert row.error_message == message
    assert "Traceback" not in message and "\n" not in message
    (note,) = p.store.notifications_for(job_id)
    assert note["kind"] == "job_failed" and note["message"] == message


@pytest.mark.parametrize("fault", TRANSIENT_FAULTS)
def test_transient_error_on_create_is_retried_then_done(pipeline: Pipeline, user_id: uuid.UUID, fault: dict) -> None:
    pipeline.fake.set_behavior(ROTO_VERSION, Behavior(starting=0, processing=1))
    inject(pipeline, "POST", CREATE, fault, times=2)
    job_id, result, took = run_job(pipeline, user_id)
    assert result.success
    assert retries(result) == 2  # POSTs are never retried by the client: each fault costs one op retry
    assert len(pipeline.fake.predictions) == 1
    assert_done_once(pipeline, job_id)
    print(f"\ncreate {fault}: done after 2 op retries in {took:.1f} s")


@pytest.mark.parametrize("fault", TRANSIENT_FAULTS)
def test_transient_error_on_poll_is_ridden_out_without_new_prediction(
    pipeline: Pipeline, user_id: uuid.UUID, fault: dict
) -> None:
    pipeline.fake.set_behavior(ROTO_VERSION, Behavior(starting=1, processing=2))
    inject(pipeline, "GET", POLL, fault, times=3)
    job_id, result, took = run_job(pipeline, user_id)
    assert result.success
    assert retries(result) == 0
    assert len(pipeline.fake.predictions) == 1  # the running prediction was not thrown away
    assert pipeline.fake.canceled_ids == []
    assert_done_once(pipeline, job_id)
    if "headers" in fault:  # the client honoured Retry-After on GET: 3 x 1 s
        assert took >= 3
    print(f"\npoll {fault}: done in {took:.1f} s")


def test_persistent_create_errors_fail_readably_after_the_retry_budget(
    pipeline: Pipeline, user_id: uuid.UUID, quick_retries: None
) -> None:
    pipeline.fake.inject("POST", CREATE, 503, times=None)
    job_id, result, _ = run_job(pipeline, user_id)
    assert not result.success
    assert retries(result) == 4
    assert pipeline.fake.predictions == {}
    assert_failed_once(pipeline, job_id, "Replicate returned HTTP 503 while creating the prediction")


def test_persistent_poll_errors_cancel_every_prediction_and_fail_readably(
    pipeline: Pipeline, user_id: uuid.UUID, quick_retries: None
) -> None:
    pipeline.fake.set_behavior(ROTO_VERSION, Behavior(starting=1, processing=5))
    pipeline.fake.inject("GET", POLL, 500, times=None)
    job_id, result, _ = run_job(pipeline, user_id)
    assert not result.success
    predictions = pipeline.fake.predictions
    # Each op attempt gives up after 10 failed polls and cancels its prediction remotely.
    assert len(predictions) == 1 + retries(result) == 5
    assert sorted(pipeline.fake.canceled_ids) == sorted(predictions)
    assert_failed_once(pipeline, job_id, "Replicate returned HTTP 500 while polling the prediction")


@pytest.mark.parametrize("status", ["failed", "canceled", "aborted"])
def test_unsuccessful_prediction_status_fails_once_without_retry(
    pipeline: Pipeline, user_id: uuid.UUID, status: str
) -> None:
    pipeline.fake.set_behavior(ROTO_VERSION, Behavior(starting=0, processing=1, final_status=status,
                                                    error="CUDA out of memory"))
    job_id, result, _ = run_job(pipeline, user_id)
    assert not result.success
    assert retries(result) == 0 and len(pipeline.fake.predictions) == 1
    detail = "CUDA out of memory" if status == "failed" else "no error message"
    assert_failed_once(pipeline, job_id, f"Replicate prediction {status}: {detail}")


def assert_timed_out_and_canceled(p: Pipeline, job_id: uuid.UUID, took: float) -> None:
    """The one prediction was canceled remotely at the 1 s deadline and the job failed once."""
    (pid,) = p.fake.predictions
    assert p.fake.canceled_ids == [pid]
    assert_failed_once(p, job_id, "Replicate prediction timed out after 1 s and was canceled")
    assert took < 15


def _short_deadline(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, seconds: str) -> None:
    monkeypatch.setenv("NOLLY_REPLICATE_TIMEOUT_SECONDS", seconds)
    monkeypatch.setenv("NOLLY_HEARTBEAT_SECONDS", "0.2")
    pipeline.defs = build_definitions(Settings.from_env())


def test_prediction_past_the_deadline_is_canceled_remotely(
    pipeline: Pipeline, user_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    _short_deadline(pipeline, monkeypatch, "1")
    pipeline.fake.set_behavior(ROTO_VERSION, Behavior(never_finishes=True))
    job_id, result, took = run_job(pipeline, user_id)
    assert not result.success and retries(result) == 0
    assert_timed_out_and_canceled(pipeline, job_id, took)


def test_slow_poll_responses_past_the_deadline_cancel_remotely(
    pipeline: Pipeline, user_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every poll answers after 1.5 s: the 1 s deadline passes during the first response."""
    _short_deadline(pipeline, monkeypatch, "1")
    pipeline.fake.set_behavior(ROTO_VERSION, Behavior(starting=1, processing=100))
    pipeline.fake.inject_delay("GET", POLL, 1.5, times=None)
    job_id, result, took = run_job(pipeline, user_id)
    assert not result.success
    assert_timed_out_and_canceled(pipeline, job_id, took)


def test_slow_create_within_the_deadline_still_succeeds(
    pipeline: Pipeline, user_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    _short_deadline(pipeline, monkeypatch, "5")
    pipeline.fake.set_behavior(ROTO_VERSION, Behavior(starting=0, processing=1))
    pipeline.fake.inject_delay("POST", CREATE, 2.0)
    job_id, result, _ = run_job(pipeline, user_id)
    assert result.success and retries(result) == 0
    assert_done_once(pipeline, job_id)
