"""The operator CLI, run as operators run it: the installed ``nolly-pipeline`` in a subprocess
against PostgreSQL, judged by its exit codes and output.

Rows are submitted with the frontend's SQL (seed.py) and moved along with the job store's
own sensor and run methods, so the CLI reads exactly what the pipeline writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

from nolly_pipeline.db.job_rows import RunIdentity
from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline.db.tables import jobs
from nolly_pipeline_tests.e2e.daemon import wait_until
from nolly_pipeline_tests.fakes.replicate_api import Behavior, FakeReplicate
from nolly_pipeline_tests.fakes.versions import ROTO_VERSION
from nolly_pipeline_tests.media import tiny_video
from nolly_pipeline_tests.orchestration.conftest import Pipeline, pipeline_env, running_pipeline
from nolly_pipeline_tests.seed import insert_job

CLI = str(Path(sys.executable).with_name("nolly-pipeline"))
INPUT = {"file_url": "s3://vfx-assets/u/clip.mp4", "settings": {}}


@pytest.fixture
def cli_env(pg_store: JobStore, postgres_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOLLY_", "REPLICATE_"))}
    return {**env, "DAGSTER_HOME": str(tmp_path / "home"), "NOLLY_DATABASE_URL": postgres_url}


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


def submit(store: JobStore, job_type: str = "roto", user: uuid.UUID | None = None) -> uuid.UUID:
    with store.engine.begin() as conn:
        return insert_job(conn, job_type, INPUT, user or uuid.uuid4())


def start(store: JobStore, job_id: uuid.UUID) -> RunIdentity:
    """Claim pending rows as the sensor does and take ``job_id`` as its run would."""
    store.claim_dispatchable(100)
    row = store.get(job_id)
    assert row is not None and row.dispatched_at is not None
    run = RunIdentity(run_id=f"run-{uuid.uuid4().hex[:12]}", attempt=row.attempt)
    store.start_run(job_id, run)
    return run


def finish(store: JobStore, job_id: uuid.UUID, error: str | None = None, **output: object) -> None:
    run = start(store, job_id)
    if error:
        assert store.finish_failed(job_id, run.run_id, error)
    else:
        data = {"output_url": f"s3://outputs/{job_id}.webm", "storage_path": f"{job_id}.webm", "bucket": "outputs",
                "files": [], "metadata": {}, **output}
        assert store.finish_done(job_id, run.run_id, data)


def test_jobs_lists_newest_first_with_filters_and_json(cli_env: dict[str, str], pg_store: JobStore) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    done = submit(pg_store, "roto", alice)
    failed = submit(pg_store, "color-grade", alice)
    pending = submit(pg_store, "audio-clean", bob)
    finish(pg_store, done)
    finish(pg_store, failed, error="unsupported pixel format [yuv444p]")

    listed = cli(cli_env, "jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == [str(pending), str(failed), str(done)]

    def ids(*args: str) -> list[str]:
        result = cli(cli_env, "jobs", "--json", *args)
        assert result.returncode == 0, result.stderr
        return [r["id"] for r in json.loads(result.stdout)]

    assert ids("--status", "done") == [str(done)]
    assert ids("--type", "color-grade") == [str(failed)]
    assert ids("--user", str(alice)) == [str(failed), str(done)]
    assert ids("--user", str(alice), "--status", "failed", "--since", "1h") == [str(failed)]
    assert ids("--since", "2999-01-01T00:00:00") == []

    table = cli(cli_env, "jobs")
    assert table.returncode == 0
    for job_id in (done, failed, pending):
        assert str(job_id) in table.stdout
    assert "unsupported pixel format [yuv444p]" in table.stdout

    bad = cli(cli_env, "jobs", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "--since takes a duration" in bad.stderr


def test_watch_exit_codes(cli_env: dict[str, str], pg_store: JobStore) -> None:
    done, failed, pending = submit(pg_store), submit(pg_store), submit(pg_store)
    finish(pg_store, done)
    # Bracketed text is shown as written, never taken for rich markup.
    finish(pg_store, failed, error="Replicate prediction failed: [Errno 12] CUDA out of memory [/gpu]")

    ok = cli(cli_env, "watch", str(done))
    assert ok.returncode == 0 and f"{done} done" in ok.stdout

    bad = cli(cli_env, "watch", str(done), str(failed))
    assert bad.returncode == 1
    assert f"{failed} failed: Replicate prediction failed: [Errno 12] CUDA out of memory [/gpu]" in bad.stdout

    unknown = cli(cli_env, "watch", str(uuid.uuid4()))
    assert unknown.returncode == 2 and "no such job" in unknown.stdout

    waiting = cli(cli_env, "watch", str(pending), "--interval", "0.2", "--timeout", "1")
    assert waiting.returncode == 124 and "still running after 1 s" in waiting.stdout


@pytest.fixture
def watcher(cli_env: dict[str, str], pg_store: JobStore) -> Iterator[tuple[uuid.UUID, subprocess.Popen[str]]]:
    job_id = submit(pg_store)
    proc = subprocess.Popen(
        [CLI, "watch", str(job_id), "--interval", "0.1", "--timeout", "60"],
        env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        yield job_id, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _first_line(proc: subprocess.Popen[str]) -> str:
    """Block until the watcher has read the row once (its first line: the job pending)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else "watcher died"
    return line.rstrip("\n")


def _seen(proc_lines: list[str], job_id: uuid.UUID) -> list[str]:
    return [line.split(": ", 1)[1].split()[0] for line in proc_lines if line.startswith(f"{job_id} roto: ")]


def test_watch_follows_a_live_job_through_its_phases_to_done(
    watcher: tuple[uuid.UUID, subprocess.Popen[str]], pg_store: JobStore
) -> None:
    job_id, proc = watcher
    first = _first_line(proc)
    run = start(pg_store, job_id)
    for phase in ("downloading", "processing", "uploading"):
        time.sleep(0.6)
        assert pg_store.set_phase(job_id, run, phase)
    time.sleep(0.6)
    assert pg_store.finish_done(job_id, run.run_id, {"output_url": "s3://outputs/x.webm", "files": []})
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [first, *out.splitlines()]
    assert _seen(lines, job_id) == ["pending", "queued", "downloading", "processing", "uploading", "done"]


def test_watch_exits_1_with_the_message_when_the_job_fails(
    watcher: tuple[uuid.UUID, subprocess.Popen[str]], pg_store: JobStore
) -> None:
    job_id, proc = watcher
    _first_line(proc)
    run = start(pg_store, job_id)
    assert pg_store.finish_failed(job_id, run.run_id, "input is 2:00:01 long; roto accepts at most 2:00:00")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert f"{job_id} failed: input is 2:00:01 long; roto accepts at most 2:00:00" in out


def test_retry_is_the_frontends_update_and_only_for_failed_jobs(cli_env: dict[str, str], pg_store: JobStore) -> None:
    failed, done = submit(pg_store), submit(pg_store)
    finish(pg_store, failed, error="flaky GPU")
    finish(pg_store, done)

    result = cli(cli_env, "retry", str(failed))
    assert result.returncode == 0, result.stderr
    row = pg_store.get(failed)
    # Exactly "UPDATE jobs SET status = 'pending'": nothing else moves; the sensor does the rest.
    assert (row.status, row.attempt, row.error_message, row.dispatched_at) == ("pending", 1, "flaky GPU", None)
    (claimed,) = pg_store.claim_dispatchable(10)
    assert (claimed.id, claimed.attempt) == (failed, 2)

    refused = cli(cli_env, "retry", str(done))
    assert refused.returncode == 1 and "only a failed job can be retried" in refused.stderr
    assert pg_store.get(done).status == "done"
    assert cli(cli_env, "retry", str(uuid.uuid4())).returncode == 1


def test_retry_refuses_a_job_out_of_attempts(cli_env: dict[str, str], pg_store: JobStore) -> None:
    job_id = submit(pg_store)
    with pg_store.engine.begin() as conn:
        conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(max_attempts=1))
    finish(pg_store, job_id, error="flaky GPU")
    result = cli(cli_env, "retry", str(job_id))
    assert result.returncode == 1 and "used all 1 attempts" in result.stderr
    assert pg_store.get(job_id).status == "failed"


def test_cancel_sets_cancel_requested_at_and_refuses_final_jobs(cli_env: dict[str, str], pg_store: JobStore) -> None:
    pending, done = submit(pg_store), submit(pg_store)
    finish(pg_store, done)
    result = cli(cli_env, "cancel", str(pending))
    assert result.returncode == 0, result.stderr
    row = pg_store.get(pending)
    assert row.cancel_requested_at is not None and row.status == "pending"
    assert pg_store.cancel_requests() == [row]  # what the cancellation sensor acts on

    refused = cli(cli_env, "cancel", str(done))
    assert refused.returncode == 1 and "already done" in refused.stderr
    assert pg_store.get(done).cancel_requested_at is None


def test_stats_counts_the_last_day_by_type(cli_env: dict[str, str], pg_store: JobStore) -> None:
    processed, reused, failed = submit(pg_store), submit(pg_store), submit(pg_store)
    old = submit(pg_store)
    submit(pg_store, "audio-clean")
    finish(pg_store, processed)
    finish(pg_store, reused, reused_from=str(processed))
    finish(pg_store, failed, error="boom")
    with pg_store.engine.begin() as conn:  # submitted two days ago: outside the window
        conn.execute(sa.update(jobs).where(jobs.c.id == old).values(created_at=sa.func.now() - sa.text("interval '2 days'")))

    result = cli(cli_env, "stats", "--json")
    assert result.returncode == 0, result.stderr
    by_type = {entry["type"]: entry for entry in json.loads(result.stdout)}
    assert set(by_type) == {"roto", "audio-clean"}
    roto = by_type["roto"]
    assert (roto["total"], roto["done"], roto["failed"], roto["pending"], roto["reused"]) == (3, 2, 1, 0, 1)
    assert roto["median_seconds_to_done"] >= 0 and roto["median_seconds_to_done_reused"] >= 0
    assert (by_type["audio-clean"]["total"], by_type["audio-clean"]["pending"]) == (1, 1)

    table = cli(cli_env, "stats")
    assert table.returncode == 0 and "roto" in table.stdout and "audio-clean" in table.stdout


def test_submit_wait_follows_the_job_the_pipeline_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pg_store: JobStore, postgres_url: str,
    s3_endpoint: str, fake_replicate: FakeReplicate,
) -> None:
    """``submit --wait`` uploads, inserts, and exits 0 once the pipeline has finished the job."""
    env = pipeline_env(postgres_url, s3_endpoint, fake_replicate, tmp_path / "home")
    with running_pipeline(monkeypatch, env, pg_store, s3_endpoint, fake_replicate) as pipeline:
        pipeline.fake.set_behavior(ROTO_VERSION, Behavior(starting=0, processing=1))
        clip = tmp_path / "clip.mp4"
        clip.write_bytes(tiny_video())
        proc = subprocess.Popen(
            [CLI, "submit", "roto", str(clip), "--wait", "--interval", "0.2", "--timeout", "120"],
            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            wait_until(lambda: pg_store.list_jobs(), timeout=60, interval=0.2, what="submitted row")
            _run_pending(pipeline)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        job_id = out.splitlines()[0]
        assert pg_store.get(job_id).status == "done"
        assert f"{job_id} done" in out


def _run_pending(pipeline: Pipeline) -> None:
    for request in pipeline.tick():
        pipeline.execute(request)
