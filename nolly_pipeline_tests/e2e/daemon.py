"""Run a real ``dagster-daemon`` against a temporary ``DAGSTER_HOME`` for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Mapping

import yaml

from nolly_pipeline_tests.processes import kill_session

REPO_ROOT = Path(__file__).resolve().parents[2]


def write_instance_yaml(home: Path, storage_url: str | None, extra: Mapping[str, object] | None = None) -> None:
    """The repo's dagster.yaml, optionally on PostgreSQL storage (as in production)."""
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    if storage_url:
        config["storage"] = {"postgres": {"postgres_url": storage_url}}
    config.update(extra or {})
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


def spawn_daemon(
    env: Mapping[str, str], log: BinaryIO, workspace: Path = REPO_ROOT / "workspace.yaml"
) -> subprocess.Popen[bytes]:
    """``dagster-daemon run`` on a workspace (the repo's by default), leading its own session,
    so that it and the run workers it starts can be signalled as one group."""
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(workspace)],
        cwd=REPO_ROOT,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@contextmanager
def running_daemon(
    env: Mapping[str, str], log_path: Path, workspace: Path = REPO_ROOT / "workspace.yaml"
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``dagster-daemon run`` in its own session; stop it and everything it started
    afterwards (its code server outlives it otherwise: see :mod:`nolly_pipeline_tests.processes`)."""
    with open(log_path, "wb") as log:
        proc = spawn_daemon(env, log, workspace)
        try:
            yield proc
        finally:
            stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """Stop a process started with ``start_new_session`` and everything it started (run
    workers, code servers): SIGTERM to the group, SIGKILL if the leader has not exited in
    ``grace`` s, then SIGKILL whatever of the session outlived it (a code server that waits
    for its runs after SIGTERM, see :mod:`nolly_pipeline_tests.processes`)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    kill_session(proc.pid, grace=5.0)


def wait_until(
    predicate: Callable[[], bool], timeout: float, interval: float = 0.5, what: str = "condition",
    on_timeout: Callable[[], str] | None = None,
) -> float:
    """Poll ``predicate``; return seconds waited, or raise TimeoutError (with ``on_timeout()``)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    detail = on_timeout() if on_timeout else ""
    raise TimeoutError(f"{what} not reached within {timeout} s\n{detail}".rstrip())
