"""A sensor configured for N seconds ticks every N seconds under the real daemon, not 2N.

The daemon wakes every 5 s and skips a sensor whose last tick began less than its minimum
interval ago; declared with exactly 5 s, the elapsed time is a hair short at the next wake-up
and our 5 s sensor ticked every 10 s (the single-job latency of issue 11 was mostly that).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from nolly_pipeline.orchestration.ticks import minimum_interval
from nolly_pipeline_tests.e2e.daemon import REPO_ROOT, running_daemon, wait_until, write_instance_yaml


def test_minimum_interval_leaves_one_second_of_tolerance() -> None:
    assert [minimum_interval(s) for s in (1, 2, 5, 60, 86400)] == [1, 1, 4, 59, 86399]


def test_a_five_second_sensor_ticks_every_five_seconds(tmp_path: Path) -> None:
    home, ticks = tmp_path / "home", tmp_path / "ticks.txt"
    write_instance_yaml(home, storage_url=None)
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_module:\n      module_name: nolly_pipeline_tests.orchestration.ticking_location\n"
        f"      working_directory: {REPO_ROOT}\n"
    )

    def count() -> int:
        return len(ticks.read_text().split()) if ticks.exists() else 0

    with running_daemon({"DAGSTER_HOME": str(home), "TICKS_FILE": str(ticks)}, tmp_path / "daemon.log", workspace):
        wait_until(lambda: count() >= 5, timeout=90, interval=0.5, what="five sensor ticks")
    times = [float(t) for t in ticks.read_text().split()]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert 4.5 <= statistics.median(gaps) <= 6.0, gaps
