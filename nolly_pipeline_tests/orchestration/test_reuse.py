"""Content-addressed result reuse and the live ``phase``, on real services.

A job identical to a finished one (same input bytes, same validated settings, type and
backend version) is ``done`` without a second Replicate prediction: the fake counts the
predictions created. Every job that differs in any part of the key, or that may not reuse,
is processed anew.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance, RunRequest

from nolly_pipeline.config import Settings
from nolly_pipeline.db.tables import jobs
from nolly_pipeline.definitions import build_definitions
from nolly_pipeline_tests.fakes.replicate_api import Behavior
from nolly_pipeline_tests.fakes.versions import ROTO_VERSION
from nolly_pipeline_tests.media import tiny_video
from nolly_pipeline_tests.orchestration.conftest import Pipeline
from nolly_pipeline_tests.orchestration.test_pipeline import insert_row

CLIP = tiny_video()


@pytest.fixture(autouse=True)
def quick_model(pipeline: Pipeline) -> None:
    pipeline.fake.set_behavior(ROTO_VERSION, Behavior(starting=0, processing=1))


def submit(p: Pipeline, user: uuid.UUID, settings: dict | None = None, data: bytes = CLIP) -> uuid.UUID:
    """Upload the bytes under a fresh key (a re-upload) and insert a roto job for them."""
    url = p.upload_input("clip.mp4", data, user=user)
    return insert_row(p, "roto", {"file_url": url, "settings": settings or {}}, user)


def run_pending(p: Pipeline) -> None:
    for request in p.tick():
        assert p.execute(request).success


def output_bytes(p: Pipeline, job_id: uuid.UUID, tmp_path: Path) -> bytes:
    dest = tmp_path / f"{job_id}.bin"
    p.s3.download("outputs", p.store.get(job_id).output_data["storage_path"], dest)
    return dest.read_bytes()


def test_identical_job_is_done_from_the_first_ones_outputs_without_a_prediction(
    pipeline: Pipeline, user_id: uuid.UUID, tmp_path: Path
) -> None:
    first = submit(pipeline, user_id)
    run_pending(pipeline)
    assert len(pipeline.fake.predictions) == 1

    # Same bytes uploaded again, the defaults spelt out: the same validated settings.
    second = submit(pipeline, user_id, {"smoothing": 0.6, "format": "webm"})
    run_pending(pipeline)

    assert len(pipeline.fake.predictions) == 1  # no second prediction created
    row, source = pipeline.store.get(second), pipeline.store.get(first)
    assert row.status == "done" and row.error_message is None and row.phase is None
    out = row.output_data
    assert out["reused_from"] == str(first)
    assert out["storage_path"].startswith(f"{user_id}/{second}/a1/")
    assert out["output_url"] == f"s3://outputs/{out['storage_path']}"
    assert [f["role"] for f in out["files"]] == [f["role"] for f in source.output_data["files"]]
    assert out["metadata"] == source.output_data["metadata"]
    assert row.reuse_key == source.reuse_key is not None
    # A copy, not a shared object: whole, and the first job's own file is untouched.
    assert output_bytes(pipeline, second, tmp_path) == output_bytes(pipeline, first, tmp_path) == (
        b"FAKE-REPLICATE:" + CLIP
    )
    (note,) = pipeline.store.notifications_for(second)
    assert note["kind"] == "job_done" and note["user_id"] == user_id

    # The Dagster UI shows the materialization as a reused one.
    event = pipeline.instance.get_latest_materialization_event(AssetKey("roto"))
    assert event is not None and event.asset_materialization is not None
    assert event.asset_materialization.partition == str(second)
    assert event.asset_materialization.metadata["reused_from"].value == str(first)


@pytest.mark.parametrize(
    "change",
    ["settings", "input", "other user", "reuse false", "scope off"],
)
def test_a_job_that_differs_or_may_not_reuse_is_processed_anew(
    pipeline: Pipeline, user_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    first = submit(pipeline, user_id)
    run_pending(pipeline)
    if change == "scope off":
        monkeypatch.setenv("NOLLY_REUSE_SCOPE", "off")
        pipeline.defs = build_definitions(Settings.from_env())
    second = {
        "settings": lambda: submit(pipeline, user_id, {"smoothing": 0.3}),
        "input": lambda: submit(pipeline, user_id, data=tiny_video(frames=6)),
        "other user": lambda: submit(pipeline, uuid.uuid4()),
        "reuse false": lambda: submit(pipeline, user_id, {"reuse": False}),
        "scope off": lambda: submit(pipeline, user_id),
    }[change]()
    run_pending(pipeline)

    assert len(pipeline.fake.predictions) == 2
    row = pipeline.store.get(second)
    assert row.status == "done" and "reused_from" not in row.output_data
    assert row.output_data["storage_path"].startswith(f"{row.user_id}/{second}/a1/")
    same_key = change in ("other user", "reuse false", "scope off")
    assert (row.reuse_key == pipeline.store.get(first).reuse_key) is same_key


def test_a_run_tagged_not_to_reuse_processes(pipeline: Pipeline, user_id: uuid.UUID) -> None:
    """An operator's backfill launched with the tag ``nolly/reuse: false`` reprocesses."""
    submit(pipeline, user_id)
    run_pending(pipeline)
    second = submit(pipeline, user_id)
    (request,) = pipeline.tick()
    tagged = request.with_replaced_attrs(tags={**request.tags, "nolly/reuse": "false"})
    assert pipeline.execute(tagged).success
    assert len(pipeline.fake.predictions) == 2
    assert "reused_from" not in pipeline.store.get(second).output_data


def test_global_scope_reuses_another_users_job(
    pipeline: Pipeline, user_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOLLY_REUSE_SCOPE", "global")
    pipeline.defs = build_definitions(Settings.from_env())
    first = submit(pipeline, user_id)
    run_pending(pipeline)
    teammate = uuid.uuid4()
    second = submit(pipeline, teammate)
    run_pending(pipeline)
    assert len(pipeline.fake.predictions) == 1
    out = pipeline.store.get(second).output_data
    assert out["reused_from"] == str(first) and out["storage_path"].startswith(f"{teammate}/{second}/a1/")


def test_a_source_whose_outputs_are_gone_is_not_a_hit(pipeline: Pipeline, user_id: uuid.UUID) -> None:
    first = submit(pipeline, user_id)
    run_pending(pipeline)
    for f in pipeline.store.get(first).output_data["files"]:
        pipeline.s3.client.delete_object(Bucket="outputs", Key=f["storage_path"])
    second = submit(pipeline, user_id)
    run_pending(pipeline)
    assert len(pipeline.fake.predictions) == 2
    row = pipeline.store.get(second)
    assert row.status == "done" and "reused_from" not in row.output_data


def test_unpinned_replicate_model_results_are_never_reused(pipeline: Pipeline, user_id: uuid.UUID) -> None:
    """color-grade runs on ``studio/grade`` (no version): Replicate may change it at any time."""
    pipeline.fake.set_behavior("studio/grade", Behavior(starting=0, processing=1))
    for _ in range(2):
        url = pipeline.upload_input("clip.mp4", CLIP, user=user_id)
        job_id = insert_row(pipeline, "color-grade", {"file_url": url, "settings": {}}, user_id)
        run_pending(pipeline)
        assert pipeline.store.get(job_id).reuse_key is None
    assert len(pipeline.fake.predictions) == 2


def _execute_alone(pipeline: Pipeline, request: RunRequest, results: dict[str, bool]) -> None:
    """Run one job on an instance of its own, so two runs can truly overlap in threads."""
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("roto_jobs", [request.partition_key])  # type: ignore[list-item]
        job = pipeline.defs.resolve_job_def(request.job_name)  # type: ignore[arg-type]
        result = job.execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=request.tags, raise_on_error=False
        )
        results[request.partition_key] = result.success  # type: ignore[index]


def test_two_identical_jobs_at_once_both_process_and_a_third_reuses(
    pipeline: Pipeline, user_id: uuid.UUID, tmp_path: Path
) -> None:
    pipeline.fake.set_behavior(ROTO_VERSION, Behavior(unit="seconds", starting=0, processing=1.5))
    a, b = submit(pipeline, user_id), submit(pipeline, user_id)
    requests = pipeline.tick()
    results: dict[str, bool] = {}
    threads = [threading.Thread(target=_execute_alone, args=(pipeline, r, results)) for r in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == {str(a): True, str(b): True}
    # Neither was done when the other looked: both processed, each into its own prefix, whole.
    first_created, second_created = sorted(p.created_monotonic for p in pipeline.fake.predictions.values())
    assert second_created - first_created < 1.5, "the two runs did not overlap"
    for job_id in (a, b):
        row = pipeline.store.get(job_id)
        assert row.status == "done" and "reused_from" not in row.output_data
        assert output_bytes(pipeline, job_id, tmp_path) == b"FAKE-REPLICATE:" + CLIP
    assert pipeline.store.get(a).reuse_key == pipeline.store.get(b).reuse_key

    third = submit(pipeline, user_id)
    run_pending(pipeline)
    assert len(pipeline.fake.predictions) == 2
    newest = max((pipeline.store.get(a), pipeline.store.get(b)), key=lambda r: r.completed_at)
    assert pipeline.store.get(third).output_data["reused_from"] == str(newest.id)
    assert output_bytes(pipeline, third, tmp_path) == b"FAKE-REPLICATE:" + CLIP


def test_phase_transitions_are_seen_by_a_poller(pipeline: Pipeline, user_id: uuid.UUID) -> None:
    """What a frontend polling ``SELECT status, phase, progress`` sees during one job."""
    pipeline.fake.set_behavior(ROTO_VERSION, Behavior(unit="seconds", starting=0, processing=0.5))
    job_id = submit(pipeline, user_id)
    query = sa.select(jobs.c.status, jobs.c.phase).where(jobs.c.id == job_id)
    assert pipeline.store.get(job_id).phase is None  # pending, not yet picked up
    (request,) = pipeline.tick()

    seen: list[tuple[str, str | None]] = []
    stop = threading.Event()

    def poll() -> None:
        with pipeline.store.engine.connect() as conn:
            while not stop.is_set():
                state = tuple(conn.execute(query).one())
                conn.commit()
                if not seen or seen[-1] != state:
                    seen.append(state)  # type: ignore[arg-type]

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        assert pipeline.execute(request).success
        time.sleep(0.2)
    finally:
        stop.set()
        poller.join()
    assert seen[0] == ("pending", "queued") and seen[-1] == ("done", None)
    phases = [phase for phase, _ in itertools.groupby(phase for _, phase in seen)]
    assert phases == ["queued", "downloading", "processing", "uploading", None], seen
