"""Run launcher for one machine: each run worker is forked from a warm zygote (see :mod:`.zygote`).

``DefaultRunLauncher`` asks the code server to spawn a fresh interpreter per run, which then
imports Dagster and the code location before its first op. On our 2-core machine that import
is most of a short job's orchestration cost. ``PreforkRunLauncher`` keeps one zygote per code
location that has already imported them (and the ``preload_modules`` of its configuration)
and forks a worker from it per run: the worker runs exactly what ``dagster api execute_run``
runs, without the imports.

Configured in the repo's ``dagster.yaml`` (the embedded default, ``make run``)::

    run_launcher:
      module: nolly_pipeline.orchestration.launcher
      class: PreforkRunLauncher
      config:
        preload_modules: [nolly_pipeline.orchestration.warm_up]

What it keeps from ``DefaultRunLauncher``, which it falls back to when a run cannot be forked
here (a code location on another interpreter or not served by a gRPC code server, a zygote
that fails to start, no ``os.fork``):

- a run never executes stale code: zygotes are keyed by a digest of the files the location
  and the preloads come from (:mod:`.source_digest`), so an edited file gets a new zygote at
  the next launch, while the daemon's reload of an unchanged location every 60 s keeps it
  (where the sources cannot be located, by the code server's id, new on every reload);
- a worker that dies without a word (kill -9, out of memory) fails its run at once: the
  zygote reports every exit, as the code server watches the workers it spawns;
- termination: the run is marked canceling and its worker gets SIGINT, which Dagster's worker
  turns into a cancelled run, as the code server's cancellation does. That needs the worker
  on the caller's host (recorded in a run tag): true for ``dagster dev`` and one-host set-ups,
  not for the compose file, whose webserver has its own container (it keeps the default).

In the daemon, building the launcher also makes the daemon's instance hold its PostgreSQL
connections, as a forked worker's does (:func:`.worker_connections.hold_in_daemon`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from dagster import Array, Field
from dagster._core.launcher import DefaultRunLauncher, LaunchRunContext
from dagster._core.storage.dagster_run import DagsterRun
from dagster._serdes import ConfigurableClassData, serialize_value

from nolly_pipeline.orchestration.source_digest import source_digest
from nolly_pipeline.orchestration.zygote_client import Zygote, ZygoteKey, is_forked_worker
from nolly_pipeline.orchestration.worker_connections import hold_in_daemon

if TYPE_CHECKING:
    from dagster import DagsterInstance
    from dagster._core.launcher.base import CheckRunHealthResult

# Run tag of a run forked from a zygote: {"host": ...}, the machine whose process it is. Set
# before the fork: a tag added while the worker runs can be lost to the worker's own updates of
# the run. The worker's pid is what Dagster's worker reports itself ("Started process for run").
WORKER_TAG = "nolly/run_worker"
# How long terminate waits for a just-forked worker to report its pid.
PID_WAIT_SECONDS = 10


class PreforkRunLauncher(DefaultRunLauncher):
    """Launches each run as a fork of a warm zygote of its code location (see module docs)."""

    def __init__(self, inst_data: ConfigurableClassData | None = None, preload_modules: Sequence[str] = ()):
        super().__init__(inst_data=inst_data)
        self._preload = tuple(preload_modules)
        self._zygotes: dict[ZygoteKey, Zygote] = {}
        self._zygotes_lock = threading.Lock()
        # pid -> run id while the worker runs; pid -> exit status of a worker that ended before
        # its launch had recorded it. Guarded by a lock never held while waiting on a zygote.
        self._workers: dict[int, str] = {}
        self._early_exits: dict[int, int] = {}
        self._workers_lock = threading.Lock()

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {"preload_modules": Field(Array(str), is_required=False, default_value=[])}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> PreforkRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    def _key(self, context: LaunchRunContext) -> ZygoteKey | None:
        """The zygote this run can be forked from, or None (launch it the default way)."""
        from dagster._core.code_pointer import FileCodePointer, ModuleCodePointer, PackageCodePointer
        from dagster._core.remote_representation.code_location import GrpcServerCodeLocation

        run = context.dagster_run
        origin = run.job_code_origin
        if not hasattr(os, "fork") or origin is None or run.remote_job_origin is None or context.workspace is None:
            return None
        location = context.workspace.get_code_location(
            run.remote_job_origin.repository_origin.code_location_origin.location_name
        )
        # Same interpreter as ours, so the zygote module is importable; a gRPC code server.
        if origin.executable_path != sys.executable or not isinstance(location, GrpcServerCodeLocation):
            return None
        pointer = origin.get_repo_pointer()
        if isinstance(pointer, (ModuleCodePointer, PackageCodePointer)):
            module: str | None = pointer.module
        elif isinstance(pointer, FileCodePointer):
            module = None
        else:
            return None
        working_directory = pointer.working_directory or os.getcwd()
        digest = source_digest([*([module] if module else []), *self._preload], working_directory)
        return ZygoteKey(sys.executable, working_directory, module, digest or f"server:{location.server_id}")

    def _instance_modules(self) -> list[str]:
        """The modules of the instance's storage, compute logs, coordinator and launcher classes:
        every worker builds its instance from them, which imports half of Dagster's storage."""
        ref = self._instance.get_ref()
        classes = [getattr(ref, field) for field in ref._fields if field.endswith("_data")]
        modules = list(dict.fromkeys(c.module_name for c in classes if isinstance(c, ConfigurableClassData)))
        if any(m.startswith("dagster_postgres") for m in modules):
            modules.append("psycopg2.extras")  # SQLAlchemy imports the driver when an engine is built
        return modules

    def _zygote(self, key: ZygoteKey) -> Zygote:
        with self._zygotes_lock:
            zygote = self._zygotes.get(key)
            if zygote is not None and zygote.alive:
                return zygote
            for stale in [k for k in self._zygotes if k.working_directory == key.working_directory and k.module == key.module]:
                self._zygotes.pop(stale).close()  # the location's code changed: new zygote
            zygote = self._zygotes[key] = Zygote(key, [*self._instance_modules(), *self._preload], self._worker_exited)
            return zygote

    def launch_run(self, context: LaunchRunContext) -> None:
        from dagster._grpc.types import ExecuteRunArgs

        run = context.dagster_run
        key = self._key(context)
        if key is None:
            return super().launch_run(context)
        if not self._claim(run):
            self._instance.report_engine_event(
                "This run was already launched (by another daemon on this machine); not launching it twice.",
                run,
                cls=type(self),
            )
            return None
        try:
            zygote = self._zygote(key)
            args = ExecuteRunArgs(
                job_origin=run.job_code_origin,  # type: ignore[arg-type]
                run_id=run.run_id,
                instance_ref=self._instance.get_ref(),
                set_exit_code_on_failure=True,
            )
            self._instance.add_run_tags(run.run_id, {WORKER_TAG: json.dumps({"host": socket.gethostname()})})
            pid = zygote.fork(serialize_value(args))
        except (OSError, RuntimeError, ValueError) as exc:
            self._instance.report_engine_event(
                f"Could not fork the run worker ({exc}); launching it through the code server.", run, cls=type(self)
            )
            return super().launch_run(context)
        self._run_ids.add(run.run_id)
        with self._workers_lock:
            status = self._early_exits.pop(pid, None)
            if status is None:
                self._workers[pid] = run.run_id
        if status is not None:
            self._fail_if_unfinished(run.run_id, pid, status)

    def _claim(self, run: DagsterRun) -> bool:
        """Whether this launch is the run's first. Two daemons on one instance both dequeue a
        run; a spawned duplicate used to start too late to do harm (Dagster ignores a worker
        for a run already started), a forked one starts within milliseconds of the first. An
        exclusively created marker in the run's storage folder lets only one through."""
        folder = os.path.join(self._instance.storage_directory(), run.run_id)
        os.makedirs(folder, exist_ok=True)
        try:
            os.close(os.open(os.path.join(folder, "launched"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True

    def _worker_exited(self, pid: int, status: int) -> None:
        """A worker ended. If its run is not over, the worker died without saying so (kill -9,
        out of memory): fail the run now, as the code server does for the workers it spawns."""
        with self._workers_lock:
            run_id = self._workers.pop(pid, None)
            if run_id is None:
                self._early_exits[pid] = status
                return
        self._fail_if_unfinished(run_id, pid, status)

    def _fail_if_unfinished(self, run_id: str, pid: int, status: int) -> None:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return
        how = f"was killed by signal {-status}" if status < 0 else f"exited with code {status}"
        self._settle_lost_worker(run, pid, how)

    def _settle_lost_worker(self, run: DagsterRun, pid: int, how: str) -> bool:
        """Record the end of a run whose worker is gone; True when that end is a success.

        A worker can be lost after its last step succeeded and its hooks wrote the job's row
        ``done``, before it recorded the run's end: the run did all its work, so it is recorded
        as a success (with an engine event saying why); otherwise it failed. Either way its
        op-concurrency claims are given back (:meth:`_free_pool_slots`)."""
        try:
            return self._record_lost_worker(run, pid, how)
        finally:
            self._free_pool_slots(run.run_id)

    def _free_pool_slots(self, run_id: str) -> None:
        """A worker frees its pool slots (``replicate``, ``local_processing``) as its steps end;
        a killed one never does, and Dagster frees them only with
        ``run_monitoring.free_slots_after_run_end_seconds``. Its steps still queued for a slot
        are removed too: a slot the pool hands to a dead run's step is never used again, so
        after a daemon was killed with its workers, live runs waited behind them for good."""
        storage = self._instance.event_log_storage
        if storage.supports_global_concurrency_limits:
            storage.free_concurrency_slots_for_run(run_id)

    def _record_lost_worker(self, run: DagsterRun, pid: int, how: str) -> bool:
        from dagster._core.events import DagsterEvent, DagsterEventType
        from dagster._core.execution.stats import StepEventStatus

        plan = self._instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)  # type: ignore[arg-type]
        steps = {s.step_key: s.status for s in self._instance.get_run_step_stats(run.run_id)}
        keys = list(plan.step_keys_to_execute)
        if keys and all(steps.get(key) == StepEventStatus.SUCCESS for key in keys):
            self._instance.report_engine_event(
                f"The run worker (pid {pid}) {how} after every step had succeeded; recording the run's success.",
                run,
                cls=type(self),
            )
            self._instance.report_dagster_event(
                DagsterEvent(DagsterEventType.RUN_SUCCESS.value, job_name=run.job_name,
                             message=f'Finished execution of run for "{run.job_name}".'),
                run_id=run.run_id,
            )
            return True
        self._instance.report_run_failed(run, f"The run worker (pid {pid}) {how} before the run finished.")
        return False

    def worker_pid(self, run_id: str, wait: float = 0) -> int | None:
        """The pid the run's worker reported (its "Started process for run" event), waiting up to
        ``wait`` s for a worker that was forked a moment ago; None when there is none (yet)."""
        from dagster import DagsterEventType

        deadline = time.monotonic() + wait
        while True:
            for entry in self._instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
                data = entry.dagster_event.engine_event_data if entry.dagster_event else None
                pid = data.metadata.get("pid") if data else None
                if pid is not None:
                    return int(pid.value)
            run = self._instance.get_run_by_id(run_id)
            if time.monotonic() >= deadline or run is None or run.is_finished:
                return None
            time.sleep(0.2)

    @staticmethod
    def forked_on(run: DagsterRun) -> str | None:
        """The host whose zygote forked ``run``'s worker; None when the code server launched it."""
        from dagster._core.storage.tags import GRPC_INFO_TAG

        if WORKER_TAG not in run.tags or GRPC_INFO_TAG in run.tags:
            return None
        return json.loads(run.tags[WORKER_TAG]).get("host")

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        host = self.forked_on(run) if run is not None else None
        if host is None:
            return super().terminate(run_id)  # launched through the code server
        if run.is_finished:  # type: ignore[union-attr]
            return False
        self._instance.report_run_canceling(run)  # type: ignore[arg-type]
        if host != socket.gethostname():
            self._instance.report_engine_event(
                f"The run worker runs on {host}; it cannot be signalled from {socket.gethostname()}.", run, cls=type(self)
            )
            return False
        pid = self.worker_pid(run_id, wait=PID_WAIT_SECONDS)
        if pid is None or not is_forked_worker(pid):
            return False  # never started, or already gone (its pid may even be another process's now)
        os.kill(pid, signal.SIGINT)
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        """For run monitoring: a STARTED run whose forked worker is gone is settled here (see
        :meth:`_settle_lost_worker`). It catches what the zygote's exit notices cannot: a worker
        that died with its daemon and zygote (the whole group killed). Runs this process cannot
        see into count as running, so monitoring leaves them alone."""
        from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus

        host = self.forked_on(run)
        if host is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "launched through the code server: not checked")
        if host != socket.gethostname():
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"worker on {host}: not checked from here")
        pid = self.worker_pid(run.run_id)
        if pid is None or is_forked_worker(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        current = self._instance.get_run_by_id(run.run_id)
        if current is None or current.is_finished:
            return CheckRunHealthResult(WorkerStatus.SUCCESS)  # ended meanwhile: nothing to do
        if self._settle_lost_worker(current, pid, "is gone"):
            return CheckRunHealthResult(WorkerStatus.SUCCESS, f"the run worker (pid {pid}) is gone; every step had succeeded")
        # Already recorded as failed: monitoring sees the status change and leaves it.
        return CheckRunHealthResult(WorkerStatus.FAILED, f"the run worker (pid {pid}) is gone")

    def register_instance(self, instance: DagsterInstance) -> None:
        super().register_instance(instance)
        hold_in_daemon(instance)  # the daemon's connections, as a worker's (see that module)

    def dispose(self) -> None:
        with self._zygotes_lock:
            for zygote in self._zygotes.values():
                zygote.close()
            self._zygotes.clear()
        super().dispose()
