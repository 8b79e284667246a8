"""Dispatch benchmark: sensor tick cost against backlog size, and per-job overhead end to end.

Run with ``make bench`` (or ``.venv/bin/python benchmarks/dispatch.py``). Needs PostgreSQL
(127.0.0.1:5432 or ``NOLLY_TEST_DATABASE_URL``); starts moto's S3 server, the fake Replicate
API and a real ``dagster-daemon``. Results are printed and written to ``docs/benchmarks.md``
between the ``dispatch`` markers.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
warnings.filterwarnings("ignore")
for _key, _value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
    os.environ.setdefault(_key, _value)

from dagster import DagsterInstance, build_sensor_context  # noqa: E402

from benchmarks._doc import write_section  # noqa: E402
from nolly_pipeline.config import Settings  # noqa: E402
from nolly_pipeline.db import migrate  # noqa: E402
from nolly_pipeline.db.engine import get_engine  # noqa: E402
from nolly_pipeline.db.jobs import JobStore  # noqa: E402
from nolly_pipeline.definitions import build_definitions  # noqa: E402
from nolly_pipeline.storage.objects import S3ObjectStore  # noqa: E402
from nolly_pipeline_tests import services  # noqa: E402
from nolly_pipeline_tests.e2e.daemon import running_daemon, wait_until, write_instance_yaml  # noqa: E402
from nolly_pipeline_tests.fakes.replicate_api import Behavior, FakeReplicate  # noqa: E402
from nolly_pipeline_tests.fakes.versions import ROTO_VERSION  # noqa: E402
from nolly_pipeline_tests.media import tiny_video  # noqa: E402

NEW_ROWS = 100


def insert_rows(engine: sa.Engine, count: int, claimed: bool) -> None:
    """Bulk-insert pending roto rows; ``claimed`` ones look already dispatched (queued runs)."""
    user = str(uuid.uuid4())
    data = json.dumps({"file_url": f"s3://vfx-assets/{user}/clip.mp4", "settings": {}})
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO jobs (user_id, type, input_data, attempt, dispatched_at) "
                "SELECT CAST(:u AS uuid), 'roto', CAST(:d AS jsonb), :a, CASE WHEN :c THEN now() END "
                "FROM generate_series(1, :n)"
            ),
            {"u": user, "d": data, "a": 1 if claimed else 0, "c": claimed, "n": count},
        )
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE jobs"))


def tick_seconds(url: str, backlog: int) -> tuple[float, int]:
    """Time one dispatch-sensor evaluation with ``backlog`` claimed rows and NEW_ROWS new ones."""
    engine = get_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    migrate.upgrade(engine)
    insert_rows(engine, backlog, claimed=True)
    insert_rows(engine, NEW_ROWS, claimed=False)
    os.environ.update({"NOLLY_DATABASE_URL": url, "REPLICATE_API_TOKEN": "bench"})
    defs = build_definitions(Settings.from_env())
    sensor = defs.get_sensor_def("pending_jobs_sensor")
    resources = defs.get_repository_def().get_top_level_resources()
    with DagsterInstance.ephemeral() as instance, build_sensor_context(instance=instance, resources=resources) as ctx:
        start = time.perf_counter()
        result = sensor(ctx)
        elapsed = time.perf_counter() - start
    return elapsed, len(result.run_requests or [])


def per_job_overhead(pg_url: str, jobs: int) -> tuple[list[float], float]:
    """Insert-to-done latency of sequential single jobs, then wall time for a batch."""
    with tempfile.TemporaryDirectory() as tmp, services.s3_server() as s3_url, FakeReplicate(token="t") as fake, \
            services.postgres_database("nolly_bench_dagster") as dagster_url:
        fake.set_behavior(ROTO_VERSION, Behavior(starting=0, processing=0))
        engine = get_engine(pg_url)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        migrate.upgrade(engine)
        store = JobStore(engine)
        s3 = S3ObjectStore.connect(s3_url, "us-east-1")
        s3.ensure_buckets(("vfx-assets", "audio-uploads", "outputs", "pipeline-intermediates"))
        src = Path(tmp) / "clip.mp4"
        src.write_bytes(tiny_video())
        s3.upload(src, "vfx-assets", "u/clip.mp4")
        home = Path(tmp) / "home"
        write_instance_yaml(home, dagster_url)
        env = {
            "DAGSTER_HOME": str(home), "NOLLY_DATABASE_URL": pg_url, "NOLLY_STORAGE": "s3",
            "NOLLY_S3_ENDPOINT_URL": s3_url, "REPLICATE_API_TOKEN": "t", "REPLICATE_BASE_URL": fake.base_url,
            "NOLLY_REPLICATE_POLL_SECONDS": "0.2", "NOLLY_SENSOR_INTERVAL_SECONDS": "1",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        }
        def submit() -> uuid.UUID:
            # One user per job: the per-user run limit would otherwise be what is measured.
            return store.insert_job("roto", {"file_url": "s3://vfx-assets/u/clip.mp4", "settings": {}}, uuid.uuid4())

        def done(ids: list[uuid.UUID]) -> bool:
            return all(store.get(i).status in ("done", "failed") for i in ids)  # type: ignore[union-attr]

        with running_daemon(env, Path(os.environ.get("NOLLY_BENCH_LOG", Path(tmp) / "daemon.log"))):
            warm_up = submit()
            wait_until(lambda: done([warm_up]), timeout=120, what="warm-up job")
            latencies = []
            for _ in range(jobs):
                job_id = submit()
                latencies.append(wait_until(lambda: done([job_id]), timeout=120, interval=0.1, what="job done"))
            batch = [submit() for _ in range(20)]
            batch_seconds = wait_until(lambda: done(batch), timeout=300, interval=0.2, what="batch done")
        statuses = {store.get(i).status for i in batch}  # type: ignore[union-attr]
        assert statuses == {"done"}, statuses
        return latencies, batch_seconds


def main() -> None:
    with services.postgres_database("nolly_bench") as url:
        tick_seconds(url, backlog=100)  # warm-up: imports, connections, plan caches
        small, small_n = tick_seconds(url, backlog=100)
        large, large_n = tick_seconds(url, backlog=10_000)
        latencies, batch = per_job_overhead(url, jobs=5)
    lines = [
        "## Dispatch (`benchmarks/dispatch.py`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on this 2-core machine; PostgreSQL 15, moto S3, fake Replicate"
        " (prediction finishes on the first poll), real `dagster-daemon`, QueuedRunCoordinator.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| sensor tick, {NEW_ROWS} new rows + 100 dispatched rows in backlog | {small * 1000:.0f} ms"
        f" ({small_n} run requests) |",
        f"| sensor tick, {NEW_ROWS} new rows + 10,000 dispatched rows in backlog | {large * 1000:.0f} ms"
        f" ({large_n} run requests) |",
        f"| ratio 10,000 / 100 backlog | {large / small:.2f}x |",
        f"| per-job overhead, insert -> done, single job (median of {len(latencies)}) |"
        f" {statistics.median(latencies):.1f} s (min {min(latencies):.1f}, max {max(latencies):.1f}) |",
        f"| 20 jobs inserted at once -> all done | {batch:.1f} s ({20 / batch * 60:.0f} jobs/min) |",
    ]
    text = "\n".join(lines)
    print(text)
    write_section("dispatch", text)


if __name__ == "__main__":
    main()
