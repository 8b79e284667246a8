"""The suite's process bookkeeping: what it counts as its own, and stopping a daemon's session.

The end-of-session check (``no_process_left_behind`` in conftest.py) relies on these: a
leftover is found whether it is still our child or was reparented to init, a process of
another session is never touched, and a daemon's code server that ignores SIGTERM is killed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

from nolly_pipeline_tests.e2e.daemon import stop_group, wait_until
from nolly_pipeline_tests.processes import SESSION_MARKER, marked_processes, session_pids

MARKER = f"{SESSION_MARKER}={os.environ[SESSION_MARKER]}"
# Prints the pid of a detached grandchild (reparented to init once its parent exits).
DETACHED = (
    "import subprocess; p = subprocess.Popen(['sleep', '120'], start_new_session=True,"
    " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid)"
)


def spawn_detached(env: dict[str, str]) -> int:
    out = subprocess.run([sys.executable, "-c", DETACHED], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_children_and_orphans_of_this_session_are_found_and_others_are_not() -> None:
    child = subprocess.Popen(["sleep", "120"])
    orphan = spawn_detached(dict(os.environ))
    foreign_env = {**os.environ, SESSION_MARKER: uuid.uuid4().hex}
    foreign = spawn_detached(foreign_env)
    try:
        found = marked_processes(MARKER, exclude=os.getpid())
        assert child.pid in found and orphan in found
        assert foreign not in found and os.getpid() not in found
    finally:
        child.kill()
        child.wait()
        for pid in (orphan, foreign):
            os.kill(pid, 9)
    wait_until(lambda: not {child.pid, orphan} & set(marked_processes(MARKER, exclude=os.getpid())),
               timeout=10, what="killed processes gone")


def test_stop_group_kills_what_outlives_the_leader() -> None:
    """Like a code server waiting for runs after SIGTERM: the leader exits, a member stays."""
    script = "trap '' TERM; sleep 120 & echo started; wait"
    leader = subprocess.Popen(
        ["bash", "-c", f"bash -c \"{script}\" & sleep 120"], start_new_session=True,
    )
    wait_until(lambda: len(session_pids(leader.pid)) >= 4, timeout=10, what="session populated")
    start = time.monotonic()
    stop_group(leader, grace=5)
    assert leader.returncode is not None
    assert session_pids(leader.pid) == []
    assert time.monotonic() - start < 20
