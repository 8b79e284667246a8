"""Re-executing a failed run from ``predict`` reuses the stored download: no second fetch."""

from __future__ import annotations

import uuid
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, ReexecutionOptions, execute_job, reconstructable

from nolly_pipeline.definitions import build_definitions
from nolly_pipeline_tests.fakes.replicate_api import Behavior
from nolly_pipeline_tests.fakes.versions import ROTO_VERSION
from nolly_pipeline_tests.media import tiny_video
from nolly_pipeline_tests.orchestration.conftest import Pipeline
from nolly_pipeline_tests.orchestration.test_pipeline import insert_row


def roto_job():  # type: ignore[no-untyped-def]
    """Module-level so Dagster can reconstruct the job for re-execution."""
    return build_definitions().resolve_job_def("roto_job")


def executed_steps(instance: DagsterInstance, run_id: str) -> set[str]:
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_START).records
    return {r.event_log_entry.step_key for r in records}  # type: ignore[misc]


def test_reexecution_from_failure_does_not_download_again(
    pipeline: Pipeline, user_id: uuid.UUID, tmp_path: Path
) -> None:
    pipeline.fake.set_behavior(ROTO_VERSION, Behavior(final_status="failed", error="GPU lost"))
    url = pipeline.upload_input("clip.mp4", tiny_video(), user=user_id)
    job_id = insert_row(pipeline, "roto", {"file_url": url}, user_id)
    (request,) = pipeline.tick()

    (tmp_path / "instance").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "instance")) as instance:
        instance.add_dynamic_partitions("roto_jobs", [str(job_id)])
        tags = {**request.tags, "dagster/partition": str(job_id)}
        with execute_job(reconstructable(roto_job), instance=instance, tags=tags) as first:
            assert not first.success
            first_run = first.run_id
        assert pipeline.store.get(job_id).status == "failed"

        # The input disappears from storage: only the stored intermediate can serve predict now.
        bucket, key = url[len("s3://"):].split("/", 1)
        pipeline.s3.client.delete_object(Bucket=bucket, Key=key)
        pipeline.fake.set_behavior(ROTO_VERSION, Behavior(starting=0, processing=1))
        options = ReexecutionOptions.from_failure(first_run, instance)
        # The UI's "re-execute from failure" carries the parent's tags over, partition included.
        with execute_job(
            reconstructable(roto_job), instance=instance, tags=tags, reexecution_options=options
        ) as second:
            assert second.success
            assert executed_steps(instance, second.run_id) == {"roto.predict", "roto.publish"}

    row = pipeline.store.get(job_id)
    assert row.status == "done" and row.attempt == 1
    out = tmp_path / "out.bin"
    pipeline.s3.download("outputs", row.output_data["storage_path"], out)
    assert out.read_bytes() == b"FAKE-REPLICATE:" + tiny_video()
    assert [n["kind"] for n in pipeline.store.notifications_for(job_id)] == ["job_failed", "job_done"]
