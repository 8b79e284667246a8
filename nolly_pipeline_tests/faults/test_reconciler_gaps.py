"""Reconciler gaps found by the crash tests, reproduced in process (fast, deterministic).

Both failed before the fixes described in docs/reliability.md ("Bugs found") and now guard them.
"""

from __future__ import annotations

import datetime as dt
import uuid

from nolly_pipeline.db.job_rows import utcnow
from nolly_pipeline.orchestration.reconciler import ReconcilerPolicy, reconcile
from nolly_pipeline_tests.media import tiny_video
from nolly_pipeline_tests.orchestration.conftest import Pipeline
from nolly_pipeline_tests.orchestration.test_pipeline import insert_row


def test_run_that_died_before_its_first_op_is_retried_not_failed(pipeline: Pipeline, user_id: uuid.UUID) -> None:
    """A daemon kill took the run worker while the run was STARTING; Dagster's run monitoring
    later fails the run ("Run timed out due to taking longer than 180 seconds to start").
    That is an infrastructure failure like any other: the row has attempts left, so it must
    get a new attempt, not end ``failed`` ("processing could not start; please retry")."""
    url = pipeline.upload_input("clip.mp4", tiny_video(), user=user_id)
    job_id = insert_row(pipeline, "roto", {"file_url": url}, user_id)
    (request,) = pipeline.tick()
    job_def = pipeline.defs.get_job_def(request.job_name)  # type: ignore[arg-type]
    run = pipeline.instance.create_run_for_job(job_def=job_def, tags={**request.tags, "dagster/run_key": request.run_key})
    pipeline.instance.report_run_failed(run, message="Run timed out due to taking longer than 180 seconds to start.")

    reconcile(pipeline.instance, pipeline.store, ReconcilerPolicy(dispatch_grace=dt.timedelta(0)),
              now=utcnow() + dt.timedelta(seconds=1))
    row = pipeline.store.get(job_id)
    assert row.attempt == 1 and row.max_attempts == 3
    assert row.status == "pending", f"ended {row.status}: {row.error_message}"
    assert pipeline.store.notifications_for(job_id) == []
    (retry,) = pipeline.tick()
    assert retry.run_key == f"{job_id}:2"
