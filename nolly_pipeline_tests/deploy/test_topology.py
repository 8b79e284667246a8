"""The compose stack run for real as processes (see :mod:`topology`): rows in, ``done`` out.

The frontend's SQL inserts rows into the ``nolly`` database; the daemon (without our package)
asks the code server to launch runs; outputs, notifications, compute logs in S3 read back
through the webserver's GraphQL (the UI's log view), and the queue's limits, are checked from
outside, as a user and an operator would see them.
"""

from __future__ import annotations

import itertools
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import sqlalchemy as sa
import yaml

from nolly_pipeline_tests.deploy.conftest import DOCKER_DIR
from nolly_pipeline_tests.deploy.topology import Topology, running_topology
from nolly_pipeline_tests.e2e.daemon import wait_until
from nolly_pipeline_tests.media import tiny_video, tiny_wav
from nolly_pipeline_tests.seed import insert_job

RUNS_QUERY = """
query Runs($filter: RunsFilter) { runsOrError(filter: $filter) { ... on Runs { results {
  runId status startTime endTime tags { key value }
} } } }
"""
# The UI's run page: the run's events, among them where each step's stdout/stderr was captured.
RUN_LOGS_QUERY = """
query RunLogsQuery($runId: ID!, $cursor: String) {
  logsForRun(runId: $runId, afterCursor: $cursor) { ... on EventConnection { events {
    __typename ... on LogsCapturedEvent { fileKey stepKeys }
  } cursor hasMore } }
}
"""
# The UI's compute-log view (CapturedLogsMetadataQuery and CapturedLogsQuery in dagster-webserver).
CAPTURED_LOGS_QUERY = """
query CapturedLogsQuery($logKey: [String!]!, $cursor: String, $limit: Int) {
  capturedLogsMetadata(logKey: $logKey) { stdoutLocation stderrLocation }
  capturedLogs(logKey: $logKey, cursor: $cursor, limit: $limit) { stdout stderr cursor }
}
"""
INPUTS = {"roto": ("vfx-assets", "mp4"), "color-grade": ("vfx-assets", "mp4"), "audio-clean": ("audio-uploads", "wav")}


@pytest.fixture
def topology(tmp_path: Path, postgres_url: str, dagster_bin: Path) -> Iterator[Topology]:
    with running_topology(tmp_path) as running:
        yield running


_distinct = itertools.count()


def upload_input(topology: Topology, job_type: str, user: uuid.UUID) -> str:
    """An input object as the studio uploads it; its public URL, as the frontend stores it.

    Each input is different, so no job is served from an identical job's result (reuse)."""
    bucket, extension = INPUTS[job_type]
    n = next(_distinct)
    data = tiny_wav(0.5 + 0.05 * n) if extension == "wav" else tiny_video(5 + n)
    key = f"{user}/{uuid.uuid4().hex[:8]}.{extension}"
    topology.s3().put_object(Bucket=bucket, Key=key, Body=data)
    return f"{topology.env['code']['NOLLY_PUBLIC_BASE_URL']}/{bucket}/{key}"


def submit(topology: Topology, job_type: str, user: uuid.UUID | None = None) -> uuid.UUID:
    user = user or uuid.uuid4()
    engine = sa.create_engine(topology.nolly_url)
    try:
        with engine.begin() as conn:
            return insert_job(conn, job_type, {"file_url": upload_input(topology, job_type, user), "settings": {}}, user)
    finally:
        engine.dispose()


def rows(topology: Topology, ids: list[uuid.UUID]) -> dict[uuid.UUID, Any]:
    engine = sa.create_engine(topology.nolly_url)
    try:
        with engine.connect() as conn:
            found = conn.execute(sa.text("SELECT * FROM jobs WHERE id = ANY(:ids)"), {"ids": ids}).mappings().all()
            return {row["id"]: row for row in found}
    finally:
        engine.dispose()


def notifications(topology: Topology, job_id: uuid.UUID) -> list[str]:
    engine = sa.create_engine(topology.nolly_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT kind FROM notifications WHERE job_id = :j"), {"j": job_id}).scalars())
    finally:
        engine.dispose()


def wait_terminal(topology: Topology, ids: list[uuid.UUID], timeout: float) -> dict[uuid.UUID, Any]:
    def terminal() -> bool:
        topology.check_alive()
        return all(r["status"] in ("done", "failed") for r in rows(topology, ids).values())

    wait_until(terminal, timeout=timeout, interval=1, what="all jobs terminal", on_timeout=topology.logs)
    return rows(topology, ids)


def run_of(topology: Topology, job_id: uuid.UUID) -> dict[str, Any]:
    (run,) = topology.graphql(RUNS_QUERY, {"filter": {"tags": [{"key": "nolly/job_id", "value": str(job_id)}]}})[
        "runsOrError"]["results"]
    return run


def captured_logs(topology: Topology, run_id: str) -> str:
    """Every step's stdout and stderr of a run, read through the webserver as the UI reads them."""
    events = topology.graphql(RUN_LOGS_QUERY, {"runId": run_id})["logsForRun"]["events"]
    file_keys = [e["fileKey"] for e in events if e["__typename"] == "LogsCapturedEvent"]
    assert file_keys, f"run {run_id} captured no logs"
    text = ""
    for file_key in file_keys:
        data = topology.graphql(CAPTURED_LOGS_QUERY, {"logKey": [run_id, "compute_logs", file_key]})
        locations = data["capturedLogsMetadata"]
        assert "s3://" in (locations["stderrLocation"] or ""), locations  # read from the bucket, not a local file
        text += (data["capturedLogs"]["stdout"] or "") + (data["capturedLogs"]["stderr"] or "")
    return text


def compute_log_objects(topology: Topology, run_id: str) -> list[str]:
    bucket = topology.env["code"]["DAGSTER_COMPUTE_LOGS_BUCKET"]
    listing = topology.s3().list_objects_v2(Bucket=bucket, Prefix=f"compute-logs/storage/{run_id}/")
    return [o["Key"] for o in listing.get("Contents", [])]


def check_done(topology: Topology, job_id: uuid.UUID, row: Any) -> float:
    """A finished job as the user sees it (row, public output URL, notification) and as an
    operator sees it (its compute logs in the bucket and in the UI). Returns insert-to-done s."""
    assert row["status"] == "done", (row["type"], row["error_message"], topology.logs())
    output_url = row["output_data"]["output_url"]
    assert output_url.startswith(topology.env["code"]["NOLLY_PUBLIC_BASE_URL"] + "/outputs/"), output_url
    served = httpx.get(output_url, timeout=30)  # anonymous, as a browser follows the link
    assert served.status_code == 200 and len(served.content) > 100, (output_url, served.status_code)
    assert notifications(topology, job_id) == ["job_done"]
    run = run_of(topology, job_id)
    assert run["status"] == "SUCCESS"
    assert compute_log_objects(topology, run["runId"]), "no compute logs of the run in the bucket"
    logs = captured_logs(topology, run["runId"])
    for step in ("download", "predict", "publish"):  # every step's output, from the bucket
        assert f".{step} - STEP_SUCCESS" in logs and run["runId"] in logs, (step, logs[-2000:])
    return (row["completed_at"] - row["created_at"]).total_seconds()


def test_compose_topology_smoke(topology: Topology) -> None:
    """One color-grade job through the whole stack, the way it runs in compose."""
    job_id = submit(topology, "color-grade")
    row = wait_terminal(topology, [job_id], timeout=180)[job_id]
    seconds = check_done(topology, job_id, row)
    print(f"\ncolor-grade: {seconds:.1f} s from insert to done (compose topology, includes the sensor interval)")


def queue_limits() -> tuple[int, dict[str, int], int, int]:
    """max_concurrent_runs, per-type limits, the per-user limit and the pools' default limit,
    from docker/dagster.yaml."""
    concurrency = yaml.safe_load((DOCKER_DIR / "dagster.yaml").read_text())["concurrency"]
    runs = concurrency["runs"]
    per_type = {l["value"]: l["limit"] for l in runs["tag_concurrency_limits"] if l["key"] == "nolly/job_type"}
    (per_user,) = [l["limit"] for l in runs["tag_concurrency_limits"] if l["key"] == "nolly/user_id"]
    assert concurrency["pools"]["granularity"] == "run"  # a pool slot is held by the whole run
    return runs["max_concurrent_runs"], per_type, per_user, concurrency["pools"]["default_limit"]


IN_PROGRESS_QUERY = """
query InProgress { runsOrError(filter: {statuses: [STARTING, STARTED, CANCELING]}) { ... on Runs { results {
  runId tags { key value }
} } } }
"""


@pytest.mark.slow
def test_compose_topology_all_types_within_queue_limits(topology: Topology) -> None:
    """Every job type ends ``done`` in the compose shape, and the queue's limits hold.

    More jobs than ``max_concurrent_runs``, spread so that the per-type limits alone would
    allow more than it (2 + 2 + 3 > 6), one user with three jobs (per-user limit 2). With the
    local backends every run also holds a slot of the ``local_processing`` pool (granularity
    run, default limit 4), which is the limit that binds. The webserver is sampled while the
    jobs run, as the UI's run list sees them. Before that burst, one job per type on its own
    gives the insert-to-done latency of the shape.
    """
    max_runs, per_type, per_user, pool_limit = queue_limits()
    # First one job of each type, within every limit: the latency of the shape itself.
    singles = {submit(topology, job_type): job_type for job_type in INPUTS}
    finished = wait_terminal(topology, list(singles), timeout=600)
    latency = {singles[job_id]: check_done(topology, job_id, row) for job_id, row in finished.items()}
    print("\none job per type, insert-to-done (s): " + ", ".join(f"{t} {s:.1f}" for t, s in latency.items()))

    heavy_user = uuid.uuid4()
    plan = [(t, uuid.uuid4()) for t in ("roto", "roto", "roto", "color-grade", "color-grade", "color-grade")]
    plan += [("audio-clean", heavy_user)] * 3 + [("audio-clean", uuid.uuid4())]
    types = [job_type for job_type, _ in plan]
    assert len(plan) > max_runs and sum(min(per_type[t], types.count(t)) for t in per_type) > max_runs
    binding = min(max_runs, pool_limit)
    ids = {submit(topology, job_type, user): job_type for job_type, user in plan}

    peaks = {"all": 0, **{t: 0 for t in per_type}, "user": 0}
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        runs = topology.graphql(IN_PROGRESS_QUERY)["runsOrError"]["results"]
        tags = [{t["key"]: t["value"] for t in run["tags"]} for run in runs]
        peaks["all"] = max(peaks["all"], len(runs))
        for job_type in per_type:
            peaks[job_type] = max(peaks[job_type], sum(t.get("nolly/job_type") == job_type for t in tags))
        peaks["user"] = max(peaks["user"], sum(t.get("nolly/user_id") == str(heavy_user) for t in tags))
        current = rows(topology, list(ids))
        if all(r["status"] in ("done", "failed") for r in current.values()):
            break
        topology.check_alive()
        time.sleep(0.5)
    else:
        raise AssertionError(f"jobs not terminal after 600 s\n{topology.logs()}")

    seconds: dict[str, list[float]] = {t: [] for t in per_type}
    for job_id, row in current.items():
        seconds[row["type"]].append(check_done(topology, job_id, row))
    print("insert-to-done of the burst (s, queueing and sensor interval "
          f"{topology.env['code']['NOLLY_SENSOR_INTERVAL_SECONDS']} s included): "
          + ", ".join(f"{t} {sorted(round(s, 1) for s in v)}" for t, v in seconds.items()))
    print(f"peak in-progress runs: {peaks} (limits: {max_runs} runs, pool {pool_limit}, {per_type}, "
          f"per user {per_user})")
    assert peaks["all"] <= binding and peaks["user"] <= per_user
    assert all(peaks[t] <= per_type[t] for t in per_type), peaks
    # The binding limit was reached: the queue, not a lack of work, held the other runs back.
    assert peaks["all"] == binding, peaks
