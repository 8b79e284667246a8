"""The real ``dagster-daemon`` holds its PostgreSQL connections once our launcher is loaded.

Stock, every query of the daemon's threads (sensor ticks, the run queue every second, run
monitoring) opens a new connection: about 10 a second with one 5 s sensor, each a new server
process. The launcher is built at the daemon's first run; from then on the daemon holds its
connections (``worker_connections.hold_in_daemon``), counted here by PostgreSQL itself.
"""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from nolly_pipeline_tests import services
from nolly_pipeline_tests.e2e.daemon import REPO_ROOT, running_daemon, wait_until, write_instance_yaml


def test_the_daemon_holds_its_connections_after_its_first_run(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_module:\n      module_name: nolly_pipeline_tests.orchestration.one_run_location\n"
        f"      working_directory: {REPO_ROOT}\n"
    )
    with services.postgres_database("nolly_daemon_conns") as url:
        home = tmp_path / "home"
        write_instance_yaml(home, storage_url=url)
        database = sa.make_url(url).database
        with DagsterInstance.from_config(str(home)) as instance, \
                running_daemon({"DAGSTER_HOME": str(home)}, tmp_path / "daemon.log", workspace):
            wait_until(lambda: instance.get_runs_count(RunsFilter(statuses=[DagsterRunStatus.SUCCESS])) == 1,
                       timeout=120, interval=0.5, what="the sensor's one run succeeded")
            before, start = services.sessions_opened(database), time.monotonic()
            time.sleep(10)  # two sensor ticks, ten passes of the run queue, ...
            per_second = (services.sessions_opened(database) - before) / (time.monotonic() - start)
    # Measured: 11 a second stock, 0.3 held (a thread that finds the held connection busy
    # opens another for its query).
    assert per_second < 3, per_second
