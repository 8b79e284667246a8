"""Run a real ``dagster-daemon`` against a temporary ``DAGSTER_HOME`` for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Mapping

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


def write_instance_yaml(home: Path, storage_url: str | None, extra: Mapping[str, object] | None = None) -> None:
    """The repo's dagster.yaml, optionally on PostgreSQL storage (as in production)."""
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    if storage_url:
        config["storage"] = {"postgres": {"postgres_url": storage_url}}
    config.update(extra or {})
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


def spawn_daemon(env: Mapping[str, str], log: BinaryIO) -> subprocess.Popen[bytes]:
    """``dagster-daemon run`` on the repo's workspace, leading its own session, so that it and
    the run workers it starts can be signalled as one group."""
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(REPO_ROOT / "workspace.yaml")],
        cwd=REPO_ROOT,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@contextmanager
def running_daemon(env: Mapping[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``dagster-daemon run`` in its own process group; stop it and its runs afterwards."""
    with open(log_path, "wb") as log:
        proc = spawn_daemon(env, log)
        try:
            yield proc
        finally:
            stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process started with ``start_new_session`` and everything it started (run
    workers, code servers): SIGTERM to the group, SIGKILL if it has not exited in 15 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=15)
            break
        except subprocess.TimeoutExpired:
            continue
    # Members that outlived a leader which exited on SIGTERM (a code server the daemon spawned
    # was found orphaned after a full run): the group goes entirely.
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


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
