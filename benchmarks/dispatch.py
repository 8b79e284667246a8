"""Dispatch benchmark: sensor tick cost against backlog size, and the project's orchestration
cost per job side by side with a bare Dagster job.

Run with ``make bench`` (or ``.venv/bin/python benchmarks/dispatch.py``). Needs PostgreSQL
(127.0.0.1:5432 or ``NOLLY_TEST_DATABASE_URL``); starts moto's S3 server, the fake Replicate
API and, one after the other, a real ``dagster-daemon`` for the bare job
(``benchmarks/bare_location.py``) and one for the project, on the same instance
configuration. Results are printed and written to ``docs/benchmarks.md`` between the
``dispatch`` markers.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import sqlalchemy as sa
import yaml

from _daemon_setup import REPO  # noqa: E402  (first: repo on sys.path, test AWS keys)

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter, build_sensor_context  # noqa: E402

from benchmarks._doc import write_section  # noqa: E402
from nolly_pipeline.config import Settings  # noqa: E402
from nolly_pipeline.db import migrate  # noqa: E402
from nolly_pipeline.db.engine import get_engine  # noqa: E402
from nolly_pipeline.db.tables import jobs  # noqa: E402
from nolly_pipeline.definitions import build_definitions  # noqa: E402
from nolly_pipeline.storage.objects import S3ObjectStore  # noqa: E402
from nolly_pipeline_tests import services  # noqa: E402
from nolly_pipeline_tests.e2e.daemon import running_daemon, wait_until, write_instance_yaml  # noqa: E402
from nolly_pipeline_tests.fakes.replicate_api import Behavior, FakeReplicate  # noqa: E402
from nolly_pipeline_tests.fakes.versions import AUDIO_VERSION  # noqa: E402
from nolly_pipeline_tests.media import tiny_wav  # noqa: E402
from nolly_pipeline_tests.seed import insert_job  # noqa: E402

NEW_ROWS = 100
BATCH = 16  # jobs inserted at once, per side
SINGLES = 4  # single jobs, one at a time, per side and round
ROUNDS = 3  # each side once in each position of the rotation
SENSOR_SECONDS = 5
SIDES = ("bare", "stock", "project")


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


@dataclass
class Side:
    """One side of the side-by-side run: how to start its daemon, submit work and see it done."""

    name: str
    env: dict[str, str]
    workspace: Path
    # Insert ``count`` units of work at once; return their ids.
    submit: Callable[[int], list[str]]
    # Epoch seconds at which each id finished, or None while any is unfinished.
    finished: Callable[[list[str]], dict[str, float] | None]


@dataclass
class SideResult:
    latencies: list[float] = field(default_factory=list)
    # One entry per round: seconds from inserting BATCH jobs at once to the last one done.
    batches: list[float] = field(default_factory=list)

    @property
    def batch_seconds(self) -> float:
        return sum(self.batches)

    @property
    def per_minute(self) -> float:
        return BATCH * len(self.batches) / self.batch_seconds * 60


def measure(side: Side, log_path: Path, singles: int, result: SideResult) -> None:
    """With the side's own daemon: a warm-up job, ``singles`` jobs one at a time (insert -> done,
    each inserted at a random moment of the sensor's period), then BATCH jobs inserted at once."""
    def run(ids: list[str], timeout: float) -> dict[str, float]:
        found: dict[str, dict[str, float] | None] = {}

        def check() -> bool:
            found["at"] = side.finished(ids)
            return found["at"] is not None

        wait_until(check, timeout=timeout, interval=0.5, what=f"{side.name}: {len(ids)} job(s) finished")
        return found["at"]  # type: ignore[return-value]

    phase = random.Random(7)  # same insert moments on both sides
    with running_daemon(side.env, log_path, side.workspace):
        run(side.submit(1), timeout=180)  # warm-up: code server loaded, sensor ticking
        for _ in range(singles):
            time.sleep(phase.uniform(0, SENSOR_SECONDS))
            inserted = time.time()
            (job_id,) = side.submit(1)
            result.latencies.append(run([job_id], timeout=300)[job_id] - inserted)
        inserted = time.time()
        batch = run(side.submit(BATCH), timeout=900)
    result.batches.append(max(batch.values()) - inserted)


def project_side(pg_url: str, tmp: Path, s3_url: str, fake: FakeReplicate, dagster_url: str) -> Side:
    """audio-clean jobs through the project: S3 storage (moto), Replicate answering at once."""
    # The "model" hands the audio back unchanged: a real output, so publish's checks and
    # preview do the work they do for every real job.
    fake.set_behavior(AUDIO_VERSION, Behavior(starting=0, processing=0, transform=bytes))
    engine = get_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    migrate.upgrade(engine)
    s3 = S3ObjectStore.connect(s3_url, "us-east-1")
    s3.ensure_buckets(("vfx-assets", "audio-uploads", "outputs", "pipeline-intermediates"))
    src = tmp / "take.wav"
    src.write_bytes(tiny_wav(1.0))
    s3.upload(src, "audio-uploads", "u/take.wav")
    home = tmp / "project-home"
    write_instance_yaml(home, dagster_url)
    env = {
        "DAGSTER_HOME": str(home), "NOLLY_DATABASE_URL": pg_url, "NOLLY_STORAGE": "s3",
        "NOLLY_S3_ENDPOINT_URL": s3_url, "REPLICATE_API_TOKEN": "t", "REPLICATE_BASE_URL": fake.base_url,
        "NOLLY_REPLICATE_POLL_SECONDS": "0.2", "NOLLY_SENSOR_INTERVAL_SECONDS": str(SENSOR_SECONDS),
        "NOLLY_WORK_DIR": str(home / "work"), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    }
    data = {"file_url": "s3://audio-uploads/u/take.wav", "settings": {}}

    def submit(count: int) -> list[str]:
        # One user per job: the per-user run limit would otherwise be what is measured.
        with engine.begin() as conn:
            return [str(insert_job(conn, "audio-clean", data, uuid.uuid4())) for _ in range(count)]

    def finished(ids: list[str]) -> dict[str, float] | None:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(jobs.c.id, jobs.c.status, jobs.c.error_message, jobs.c.completed_at)
                .where(jobs.c.id.in_([uuid.UUID(i) for i in ids]))
            ).all()
        if len(rows) < len(ids) or any(r.status not in ("done", "failed") for r in rows):
            return None
        failed = [r.error_message for r in rows if r.status == "failed"]
        assert not failed, failed
        # completed_at is naive UTC (the seed's TIMESTAMP columns).
        return {str(r.id): r.completed_at.replace(tzinfo=dt.timezone.utc).timestamp() for r in rows}

    return Side("project", env, REPO / "workspace.yaml", submit, finished)


def bare_side(name: str, home: Path, rows_url: str, instance: DagsterInstance) -> Side:
    """The bare Dagster job of ``benchmarks/bare_location.py``; its rows live in ``rows_url``."""
    from benchmarks.bare_location import ROW_TAG, TABLE_DDL

    engine = get_engine(rows_url)
    with engine.begin() as conn:
        conn.execute(sa.text(TABLE_DDL))
    tmp = home.parent
    workspace = tmp / f"{name}-workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_module:\n      module_name: benchmarks.bare_location\n"
        f"      location_name: bare\n      working_directory: {REPO}\n"
    )
    libpq_url = sa.make_url(rows_url).set(drivername="postgresql").render_as_string(hide_password=False)
    env = {"DAGSTER_HOME": str(home), "BARE_DATABASE_URL": libpq_url,
           "BARE_SENSOR_INTERVAL_SECONDS": str(SENSOR_SECONDS)}

    def submit(count: int) -> list[str]:
        ids = [str(uuid.uuid4()) for _ in range(count)]
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO bare_rows (id, user_id) VALUES (CAST(:i AS uuid), CAST(:u AS uuid))"),
                         [{"i": i, "u": str(uuid.uuid4())} for i in ids])
        return ids

    def finished(ids: list[str]) -> dict[str, float] | None:
        ends: dict[str, float] = {}
        finished_runs = RunsFilter(
            tags={ROW_TAG: ids}, statuses=[DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE]
        )
        for record in instance.get_run_records(finished_runs):
            row_id = record.dagster_run.tags[ROW_TAG]
            assert record.dagster_run.status == DagsterRunStatus.SUCCESS, row_id
            ends[row_id] = record.end_time  # type: ignore[assignment]
        return ends if len(ends) == len(ids) else None

    return Side(name, env, workspace, submit, finished)


def write_stock_instance_yaml(home: Path, storage_url: str) -> None:
    """The repo's dagster.yaml without its run launcher: stock Dagster's DefaultRunLauncher."""
    write_instance_yaml(home, storage_url)
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    del config["run_launcher"]
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


def side_by_side(pg_url: str, singles: int, rounds: int) -> dict[str, SideResult]:
    """Rounds of the three sides, each with its own daemon and Dagster database, in rotating
    order so that a change in the machine's load during the run weighs on all alike:

    * ``bare``: the bare job on the repo's dagster.yaml (the same launcher as the project);
    * ``stock``: the bare job on the same file without its run launcher (stock Dagster);
    * ``project``: the project's audio-clean jobs.
    """
    results = {name: SideResult() for name in SIDES}
    with tempfile.TemporaryDirectory() as tmp_name, services.s3_server() as s3_url, \
            FakeReplicate(token="t") as fake, services.postgres_database("nolly_bench_bare") as bare_url, \
            services.postgres_database("nolly_bench_stock") as stock_url, \
            services.postgres_database("nolly_bench_dagster") as dagster_url:
        tmp = Path(tmp_name)
        log_dir = Path(os.environ.get("NOLLY_BENCH_LOG_DIR", tmp))
        bare_home, stock_home = tmp / "bare-home", tmp / "stock-home"
        write_instance_yaml(bare_home, bare_url)  # the bare side's rows share its Dagster database
        write_stock_instance_yaml(stock_home, stock_url)
        with DagsterInstance.from_config(str(bare_home)) as bare_instance, \
                DagsterInstance.from_config(str(stock_home)) as stock_instance:
            sides = [bare_side("bare", bare_home, bare_url, bare_instance),
                     bare_side("stock", stock_home, stock_url, stock_instance),
                     project_side(pg_url, tmp, s3_url, fake, dagster_url)]
            for round_ in range(rounds):
                for side in sides[round_ % 3:] + sides[:round_ % 3]:
                    result = results[side.name]
                    measure(side, log_dir / f"{side.name}-daemon-{round_}.log", singles, result)
                    print(f"round {round_} {side.name}: batch {result.batches[-1]:.1f} s,"
                          f" singles {[round(x, 1) for x in result.latencies[-singles:]]}", flush=True)
    return results


def import_seconds(statement: str, repeats: int = 5) -> float:
    """Median wall time of a fresh interpreter running ``statement`` (what a run worker pays
    before its first op), with the benchmark's configuration in the environment."""
    env = {**os.environ, "DAGSTER_HOME": tempfile.gettempdir(), "NOLLY_STORAGE": "s3", "REPLICATE_API_TOKEN": "t"}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], cwd=REPO, env=env, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    with services.postgres_database("nolly_bench") as url:
        tick_seconds(url, backlog=100)  # warm-up: imports, connections, plan caches
        small, small_n = tick_seconds(url, backlog=100)
        large, large_n = tick_seconds(url, backlog=10_000)
        results = side_by_side(url, singles=SINGLES, rounds=ROUNDS)
    bare_import = import_seconds("import dagster")
    project_import = import_seconds("import nolly_pipeline.definitions")
    project, bare, stock = results["project"], results["bare"], results["stock"]
    ratio = project.batch_seconds / bare.batch_seconds

    def rounds_text(r: SideResult) -> str:
        return " / ".join(f"{b:.1f}" for b in r.batches) + " s"

    def latency(r: SideResult) -> str:
        return f"{statistics.median(r.latencies):.1f} s (min {min(r.latencies):.1f}, max {max(r.latencies):.1f})"

    def per_round(a: SideResult, b: SideResult) -> str:
        return " / ".join(f"{x / y:.2f}" for x, y in zip(a.batches, b.batches))

    lines = [
        "## Dispatch (`benchmarks/dispatch.py`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on this 2-core machine (absolute times are noisy;"
        " the ratios are measured side by side in one run); PostgreSQL 15, real `dagster-daemon` with the"
        " repo's `dagster.yaml` (QueuedRunCoordinator, 4 concurrent runs, audio-clean runs at most 3,"
        " run workers forked from a warm zygote by `PreforkRunLauncher`), Dagster storage on PostgreSQL.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| sensor tick, {NEW_ROWS} new rows + 100 dispatched rows in backlog | {small * 1000:.0f} ms"
        f" ({small_n} run requests) |",
        f"| sensor tick, {NEW_ROWS} new rows + 10,000 dispatched rows in backlog | {large * 1000:.0f} ms"
        f" ({large_n} run requests) |",
        f"| ratio 10,000 / 100 backlog | {large / small:.2f}x |",
        f"| fresh interpreter: `import dagster` / `import nolly_pipeline.definitions` (median of 5) |"
        f" {bare_import:.2f} s / {project_import:.2f} s (the code location adds {project_import - bare_import:.2f} s;"
        " a forked worker pays neither) |",
        "",
        f"Three sides, one daemon each, in {ROUNDS} rounds of rotating order; per side and round {BATCH} jobs"
        f" inserted at once (one user each) and {SINGLES} single jobs one at a time (inserted at random moments"
        f" of the sensor's {SENSOR_SECONDS} s period, the same moments on every side; every side's sensor ticks"
        f" every {SENSOR_SECONDS} s, see `orchestration/ticks.py`). Project: audio-clean jobs,"
        " S3 storage (moto), a Replicate fake that answers at once and hands the audio back (so publish checks"
        " and previews a real file). Bare: three no-op ops `download -> predict -> publish`, in-process"
        " executor, one run per row claimed by a sensor, with the project's concurrency tags and `predict` in"
        " the same pool (`benchmarks/bare_location.py`), on the same `dagster.yaml`. Stock: the same bare job"
        " on the same file without `run_launcher`, i.e. Dagster's `DefaultRunLauncher` (a fresh interpreter"
        " per run).",
        "",
        "| measure | project | bare Dagster, same launcher | bare Dagster, stock launcher |",
        "|---|---|---|---|",
        f"| {BATCH} jobs inserted at once -> all done, per round | {rounds_text(project)} | {rounds_text(bare)}"
        f" | {rounds_text(stock)} |",
        f"| all rounds ({BATCH * ROUNDS} jobs per side) | {project.batch_seconds:.1f} s | {bare.batch_seconds:.1f} s"
        f" | {stock.batch_seconds:.1f} s |",
        f"| throughput | {project.per_minute:.1f} jobs/min | {bare.per_minute:.1f} runs/min"
        f" | {stock.per_minute:.1f} runs/min |",
        f"| single job, insert -> done (median of {SINGLES * ROUNDS}) | {latency(project)} | {latency(bare)}"
        f" | {latency(stock)} |",
        "",
        "| ratio | per round | all rounds |",
        "|---|---|---|",
        f"| project / bare, same launcher | {per_round(project, bare)} | **{ratio:.2f}** (goal <= 1.2) |",
        f"| project / stock bare Dagster | {per_round(project, stock)} |"
        f" **{project.batch_seconds / stock.batch_seconds:.2f}** |",
        f"| bare, same launcher / stock (what the launcher saves any job) | {per_round(bare, stock)} |"
        f" {bare.batch_seconds / stock.batch_seconds:.2f} |",
    ]
    text = "\n".join(lines)
    print(text)
    write_section("dispatch", text)


if __name__ == "__main__":
    main()
