"""A warm process that run workers are forked from (started by :mod:`.launcher`).

Dagster's default launcher starts every run worker as a fresh interpreter, which imports Dagster
and the code location again before its first op: about 1.5 s of CPU per run on our 2-core
machine, more than the ops of a short job cost. This process imports them once (the same idea as
the ``forkserver`` start method with ``preload_modules`` of Dagster's multiprocess executor, one
level up: per run instead of per step), then forks one child per run. The child is an ordinary
``dagster api execute_run`` worker that starts with everything already imported, and whose
instance holds its database connections while it works (see :func:`run_worker`).

Protocol, one JSON object per line: the zygote writes ``{"ready": ..., "failed": [...]}`` once
its imports are done; for each request line ``{"execute_run_args": "<serialized ExecuteRunArgs>"}``
on stdin it forks and answers ``{"pid": N}``; when a worker ends it writes ``{"exited": N,
"status": exit code, or -signal}``. End of stdin (its launcher is gone) ends the zygote; runs
already forked carry on, as a code server's runs do.

The zygote stays single-threaded and opens no connections before forking, so a child inherits
no lock held by another thread and no socket shared with a sibling.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import json
import os
import select
import sys
import threading

# Enough of Dagster that a forked worker starts executing at once: the CLI body it runs, the
# execution machinery it drives, and what its instance imports only when built (``upath``, for
# the definitions-state storage every instance has: ~0.1 s a run when left to the worker).
DAGSTER_MODULES = (
    "dagster", "dagster._cli.api", "dagster._core.execution.api",
    "upath.core", "dagster._core.storage.defs_state.blob_storage_state_storage",
)


def preload(modules: list[str]) -> list[str]:
    """Import ``modules``; return ``"module: error"`` for each that failed (a failed preload only
    costs speed: the worker imports it itself)."""
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any import error is reported, not fatal
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    return failed


def reap() -> None:
    """Collect exited children (no zombies) and tell the launcher how each ended, so a worker
    that died (kill -9, out of memory) fails its run at once, as with a code server."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        reply({"exited": pid, "status": os.waitstatus_to_exitcode(status)})


def reply(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def serve() -> str | None:
    """Answer fork requests until stdin closes. Returns in a forked child (with the run's
    arguments, so the child unwinds this loop before running), or None in the zygote at the end."""
    while True:
        readable, _, _ = select.select([sys.stdin], [], [], 1.0)
        reap()
        if not readable:
            continue
        line = sys.stdin.readline()
        if not line:
            return None
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        gc.freeze()  # what the loop allocated since, too
        pid = os.fork()
        if pid == 0:
            return request["execute_run_args"]
        reply({"pid": pid})


def become_worker() -> None:
    """In the forked child: stdin from /dev/null, stdout to the shared log (stderr), so the
    worker cannot read or answer the zygote's protocol."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)


def run_worker(execute_run_args: str) -> int:
    """Run what ``dagster api execute_run`` runs (the same interrupt handling: SIGINT cancels
    the run; the same instance and exit code); return the exit code.

    One difference: the instance holds its PostgreSQL connections while the run works instead
    of connecting anew for each of its ~50 events, and closes them when idle, and it does not
    ask the catalog again for a table it found (:mod:`.worker_connections`).
    """
    from dagster._cli.api import _execute_run_command_body
    from dagster._cli.utils import get_instance_for_cli
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import deserialize_value
    from dagster._utils.interrupts import capture_interrupts

    from nolly_pipeline.orchestration.worker_connections import hold_connections, remember_tables

    with capture_interrupts():
        args = deserialize_value(execute_run_args, ExecuteRunArgs)
        with get_instance_for_cli(instance_ref=args.instance_ref) as instance:
            hold_connections(instance)
            remember_tables(instance)
            return _execute_run_command_body(
                args.run_id, instance, lambda _event: None,
                set_exit_code_on_failure=args.set_exit_code_on_failure or False,
            )


def exit_worker(code: int) -> None:
    """End the worker as ``multiprocessing`` ends a forked child: wait for its threads (e.g.
    background uploads) and run its exit handlers, then leave without tearing down the
    preloaded modules, which would touch (and so copy) every page shared with the zygote."""
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # joins threads, as multiprocessing does
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    # Objects the zygote creates are shared with every worker until written to: no collection
    # here, and workers' collections skip them (gc.freeze), so they stay shared.
    gc.disable()
    working_directory = os.getcwd()
    if working_directory not in sys.path:
        sys.path.insert(0, working_directory)  # as Dagster does for a module code pointer
    failed = preload([*DAGSTER_MODULES, *sys.argv[1:]])
    gc.freeze()
    reply({"ready": True, "failed": failed})
    execute_run_args = serve()
    if execute_run_args is None:
        return
    become_worker()
    gc.enable()
    code = 1
    try:
        code = run_worker(execute_run_args)
    finally:
        exit_worker(code)


if __name__ == "__main__":
    main()
