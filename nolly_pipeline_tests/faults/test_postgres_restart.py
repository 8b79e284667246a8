"""PostgreSQL (the jobs database) stopped mid-processing for a few seconds, then started again.

The test owns a second PostgreSQL cluster (initdb into a temporary directory with Debian's
server binaries, run as ``postgres``), so it can stop it without touching the suite's server.
Dagster's own storage stays on the suite's server.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from nolly_pipeline.db import migrate
from nolly_pipeline.db.engine import get_engine
from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline_tests import services
from nolly_pipeline_tests.faults._checks import assert_exactly_once
from nolly_pipeline_tests.faults.harness import ROTO_VERSION, insert_rows, status_counts, upload_inputs, wait_until
from nolly_pipeline_tests.fakes.replicate_api import Behavior
from nolly_pipeline_tests.media import tiny_video

pytestmark = pytest.mark.slow

JOBS = int(os.environ.get("NOLLY_PG_RESTART_JOBS", "40"))
USERS, OUTAGE_SECONDS = JOBS // 2, 8


class Cluster:
    def __init__(self, bindir: Path, datadir: Path, port: int) -> None:
        self.bindir, self.datadir, self.port = bindir, datadir, port

    def _as_postgres(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=60)

    def init(self) -> None:
        self._as_postgres(str(self.bindir / "initdb"), "-D", str(self.datadir), "-A", "trust", "-U", "postgres")

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.datadir} -c fsync=off"
        self._as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-o", opts,
                          "-l", str(self.datadir / "server.log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        message = "PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb) are not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="nolly-pg-"))
    datadir = root / "data"
    datadir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(datadir, "postgres")
    cluster = Cluster(Path(candidates[-1]).parent, datadir, services.free_port())
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        try:
            cluster.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(root, ignore_errors=True)


def test_jobs_database_restart_mid_processing(make_stack, own_cluster: Cluster) -> None:
    engine = get_engine(own_cluster.url)
    migrate.upgrade(engine)
    store = JobStore(engine)
    stack = make_stack(
        store, own_cluster.url,
        NOLLY_HEARTBEAT_SECONDS="1", NOLLY_HEARTBEAT_TIMEOUT_SECONDS="15", NOLLY_RECONCILER_INTERVAL_SECONDS="2",
        # Longer than the daemon takes to create the 40 runs one tick claims (seen: over 10 s on
        # a loaded 2-core machine; a claim released before its run exists is dispatched again,
        # and the late runs of earlier attempts spent the attempt budget). Still far below the
        # default (300 s), so runs that failed during the outage are settled within the wait.
        NOLLY_DISPATCH_GRACE_SECONDS="60",
    )
    stack.fake.set_behavior(ROTO_VERSION, Behavior(starting=1, processing=3))
    users = [uuid.uuid4() for _ in range(USERS)]
    upload_inputs(stack.s3, stack.tmp, tiny_video(), [f"{u}/clip.mp4" for u in users])
    job_ids = insert_rows(engine, [("roto", users[i % USERS], stack.input_url(f"{users[i % USERS]}/clip.mp4"))
                                   for i in range(JOBS)])
    daemon = stack.daemon().start()
    started = time.monotonic()

    def terminal() -> int:
        counts = status_counts(engine)
        return counts.get("done", 0) + counts.get("failed", 0)

    try:
        wait_until(lambda: terminal() >= 2 and status_counts(engine).get("running", 0) >= 1, 600, interval=0.5,
                 what="processing under way", on_timeout=daemon.log_tail)
        before = status_counts(engine)
        engine.dispose()
        down_at = time.monotonic()
        own_cluster.stop("immediate")  # like a crash: connections cut, no checkpoint
        time.sleep(OUTAGE_SECONDS)
        own_cluster.start()
        outage = time.monotonic() - down_at
        wait_until(lambda: terminal() >= JOBS, 600, interval=2, what="all rows terminal",
                 on_timeout=lambda: f"{status_counts(engine)}\n{daemon.log_tail()}")
    finally:
        daemon.stop()
    elapsed = time.monotonic() - started
    table, census = assert_exactly_once(engine, stack.home, job_ids)
    assert status_counts(engine).get("running", 0) == 0
    attempts = Counter(r["attempt"] for r in table.values())
    print(f"\nPostgreSQL down {outage:.1f} s with statuses {before}; all {JOBS} done after {elapsed:.0f} s; "
          f"attempts {dict(sorted(attempts.items()))}; runs {dict(census.by_status)}")
    engine.dispose()
