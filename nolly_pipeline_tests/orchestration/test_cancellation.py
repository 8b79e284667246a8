"""Cancellation from the frontend: ``cancel_requested_at`` ends the job and the remote prediction."""

from __future__ import annotations

import threading
import uuid

import pytest

from nolly_pipeline.orchestration.reconciler import process_cancellations
from nolly_pipeline_tests.e2e.daemon import wait_until
from nolly_pipeline_tests.fakes.replicate_api import Behavior
from nolly_pipeline_tests.fakes.versions import ROTO_VERSION
from nolly_pipeline_tests.media import tiny_video
from nolly_pipeline_tests.orchestration.conftest import Pipeline
from nolly_pipeline_tests.orchestration.test_pipeline import insert_row
from nolly_pipeline_tests.seed import request_cancel


@pytest.fixture(autouse=True)
def fast_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOLLY_HEARTBEAT_SECONDS", "0.2")


def test_cancel_while_predicting_cancels_remote_prediction(pipeline: Pipeline, user_id: uuid.UUID) -> None:
    from nolly_pipeline.config import Settings
    from nolly_pipeline.definitions import build_definitions

    pipeline.defs = build_definitions(Settings.from_env())  # pick up the fast heartbeat
    pipeline.fake.set_behavior(ROTO_VERSION, Behavior(never_finishes=True))
    url = pipeline.upload_input("clip.mp4", tiny_video(), user=user_id)
    job_id = insert_row(pipeline, "roto", {"file_url": url}, user_id)
    (request,) = pipeline.tick()
    outcome: dict[str, object] = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("result", pipeline.execute(request)))
    worker.start()
    wait_until(lambda: len(pipeline.fake.predictions) == 1, timeout=30, interval=0.05, what="prediction created")

    request_cancel(pipeline.store.engine, job_id)
    assert process_cancellations(pipeline.instance, pipeline.store) == 1
    worker.join(timeout=30)
    assert not worker.is_alive()

    row = pipeline.store.get(job_id)
    assert row.status == "failed" and row.error_message == "canceled by user"
    assert len(pipeline.fake.canceled_ids) == 1  # the remote prediction stopped costing money
    assert [n["kind"] for n in pipeline.store.notifications_for(job_id)] == ["job_failed"]
    assert not outcome["result"].success  # type: ignore[attr-defined]


def test_cancel_before_dispatch_and_while_queued(pipeline: Pipeline, user_id: uuid.UUID) -> None:
    early = insert_row(pipeline, "roto", {"file_url": "s3://vfx-assets/u/a.mp4"}, user_id)
    request_cancel(pipeline.store.engine, early)
    queued = insert_row(pipeline, "roto", {"file_url": "s3://vfx-assets/u/b.mp4"}, user_id)
    requests = pipeline.tick()  # `early` is refused at dispatch; `queued` gets a run request
    assert [r.partition_key for r in requests] == [str(queued)]
    request_cancel(pipeline.store.engine, queued)
    assert process_cancellations(pipeline.instance, pipeline.store) == 1
    result = pipeline.execute(requests[0])  # the queued run starts anyway: it must not work
    assert not result.success
    for job_id in (early, queued):
        row = pipeline.store.get(job_id)
        assert row.status == "failed" and row.error_message == "canceled by user"
        assert len(pipeline.store.notifications_for(job_id)) == 1
    assert pipeline.fake.predictions == {}
