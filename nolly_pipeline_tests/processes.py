"""Processes the suite starts, found through ``/proc``: to stop them and to prove none is left.

A ``dagster-daemon`` leads its own session; its code server (``dagster api grpc``) and the run
workers it spawns are in that session too, and outlive the daemon when it exits first: the
code server handles SIGTERM by waiting for runs that may never report back (its cleanup
thread dies once the test has dropped the Dagster database), so a graceful stop must be
followed by a kill of whatever is left of the session.

Every process the suite starts inherits :data:`SESSION_MARKER` from the test session's
environment, so at the end the suite can find its own leftovers, reparented to init or not,
without touching processes of other sessions running on the same machine.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

# Not NOLLY_*: tests that build a clean environment drop the project's variables, not this.
SESSION_MARKER = "PYTEST_NOLLY_SESSION"


def proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name: state, ppid, pgrp, session, ..."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces; fields after the closing parenthesis are fixed.
    return raw[raw.rindex(")") + 2 :].split()


def live_pids() -> dict[int, list[str]]:
    """pid -> stat fields of every process that is not a zombie."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = proc_stat(int(entry.name))
            if fields and fields[0] != "Z":
                found[int(entry.name)] = fields
    return found


def session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid`` (the daemon leads its own session)."""
    return [pid for pid, fields in live_pids().items() if int(fields[3]) == sid]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill_session(sid: int, grace: float = 10.0) -> None:
    """Wait up to ``grace`` seconds for session ``sid`` to exit by itself, then SIGKILL the rest
    and wait (briefly) until they are gone."""
    deadline = time.monotonic() + grace
    while session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5.0
    while session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.05)


def marked_processes(marker: str, exclude: int) -> dict[int, str]:
    """pid -> command line of live processes whose environment carries ``marker``
    (``NAME=value``), and of the descendants of ``exclude``, other than ``exclude`` itself and
    the ``multiprocessing`` helpers it owns (they end with it)."""
    needle = marker.encode()
    stats = live_pids()
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    found: set[int] = set()
    stack = list(children.get(exclude, []))
    while stack:
        pid = stack.pop()
        found.add(pid)
        stack.extend(children.get(pid, []))
    for pid in stats:
        try:
            if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.add(pid)
        except OSError:
            continue
    found.discard(exclude)
    return {
        pid: line
        for pid in sorted(found)
        if (line := cmdline(pid))
        and not (int(stats[pid][1]) == exclude and "from multiprocessing." in line)
    }
