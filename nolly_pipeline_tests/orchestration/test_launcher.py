"""PreforkRunLauncher: runs are forked from a warm zygote, cancel cleanly, and never run stale code.

A real gRPC code server serves ``launcher_location`` (as the daemon's workspace does) and runs
are launched through the instance, as the daemon's run queue launches them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, instance_for_test
from dagster._core.workspace.context import WorkspaceProcessContext, WorkspaceRequestContext
from dagster._core.workspace.load_target import ModuleTarget

from nolly_pipeline.orchestration.launcher import WORKER_TAG, PreforkRunLauncher
from nolly_pipeline.orchestration.zygote_client import is_forked_worker
from nolly_pipeline_tests import services
from nolly_pipeline_tests.e2e.daemon import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCATION = "nolly_pipeline_tests.orchestration.launcher_location"
LAUNCHER = {
    "module": "nolly_pipeline.orchestration.launcher",
    "class": "PreforkRunLauncher",
    "config": {"preload_modules": ["nolly_pipeline_tests.orchestration.preload_marker"]},
}


@contextmanager
def served_location(instance: DagsterInstance, module: str = LOCATION,
                    working_directory: Path = REPO_ROOT) -> Iterator[WorkspaceProcessContext]:
    target = ModuleTarget(module_name=module, attribute=None, working_directory=str(working_directory),
                          location_name="launcher_test")
    with WorkspaceProcessContext(instance, target) as process_context:
        yield process_context


def launch(instance: DagsterInstance, workspace: WorkspaceRequestContext, job_name: str) -> str:
    location = workspace.get_code_location("launcher_test")
    remote_job = location.get_repository("__repository__").get_full_job(job_name)
    from nolly_pipeline_tests.orchestration import launcher_location

    run = instance.create_run_for_job(
        job_def=getattr(launcher_location, job_name),
        remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(),
    )
    instance.launch_run(run.run_id, workspace)
    return run.run_id


def finished(instance: DagsterInstance, run_id: str, timeout: float = 60) -> DagsterRunStatus:
    wait_until(lambda: instance.get_run_by_id(run_id).is_finished, timeout=timeout, interval=0.1,  # type: ignore[union-attr]
               what=f"run {run_id} finished")
    return instance.get_run_by_id(run_id).status  # type: ignore[union-attr]


def wait_step_started(instance: DagsterInstance, run_id: str, what: str = "step started") -> None:
    wait_until(lambda: any(e.dagster_event and e.dagster_event.event_type == DagsterEventType.STEP_START
                           for e in instance.all_logs(run_id)), timeout=60, interval=0.1, what=what)


def messages(instance: DagsterInstance, run_id: str) -> list[str]:
    return [e.message or "" for e in instance.all_logs(run_id)]


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    with instance_for_test(temp_dir=str(tmp_path), overrides={"run_launcher": LAUNCHER}) as instance:
        assert isinstance(instance.run_launcher, PreforkRunLauncher)
        yield instance


def test_run_worker_is_forked_from_a_zygote_that_preloaded_the_location(instance: DagsterInstance) -> None:
    with served_location(instance) as process_context:
        workspace = process_context.create_request_context()
        run_ids = [launch(instance, workspace, "report_job") for _ in range(2)]
        reports = []
        for run_id in run_ids:
            assert finished(instance, run_id) == DagsterRunStatus.SUCCESS
            reports.append(next(json.loads(m) for m in messages(instance, run_id) if m.startswith('{"worker"')))
            worker = json.loads(instance.get_run_by_id(run_id).tags[WORKER_TAG])  # type: ignore[union-attr]
            assert worker == {"host": socket.gethostname()}
            assert instance.run_launcher.worker_pid(run_id) == reports[-1]["worker"]  # type: ignore[attr-defined]
        (zygote,) = instance.run_launcher._zygotes.values()  # type: ignore[attr-defined]
        for report in reports:
            # Forked from the one zygote, which imported the location and the preload before.
            assert report["parent"] == zygote.process.pid
            assert report["location_imported_in"] == zygote.process.pid
            assert report["preload_imported_in"] == zygote.process.pid
        assert reports[0]["worker"] != reports[1]["worker"]
        instance.run_launcher.dispose()
        assert zygote.process.poll() == 0  # ends with its launcher, leaving no zombie behind


def test_terminate_interrupts_the_forked_worker_and_cancels_the_run(instance: DagsterInstance) -> None:
    with served_location(instance) as process_context:
        run_id = launch(instance, process_context.create_request_context(), "waiting_job")
        wait_step_started(instance, run_id)
        pid = instance.run_launcher.worker_pid(run_id)  # type: ignore[attr-defined]
        assert pid is not None and is_forked_worker(pid)
        assert instance.run_launcher.terminate(run_id)
        assert finished(instance, run_id, timeout=30) == DagsterRunStatus.CANCELED
        wait_until(lambda: not is_forked_worker(pid), timeout=10, interval=0.1, what="worker exited")
        assert not instance.run_launcher.terminate(run_id)  # finished: nothing left to stop


def test_a_killed_worker_fails_its_run_at_once(instance: DagsterInstance) -> None:
    """kill -9 leaves the worker no chance to report: the zygote sees it die and the launcher
    fails the run, as a code server does for the workers it spawns."""
    with served_location(instance) as process_context:
        run_id = launch(instance, process_context.create_request_context(), "waiting_job")
        wait_step_started(instance, run_id)
        pid = instance.run_launcher.worker_pid(run_id)  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGKILL)
        assert finished(instance, run_id, timeout=10) == DagsterRunStatus.FAILURE
        assert f"The run worker (pid {pid}) was killed by signal 9 before the run finished." in messages(instance, run_id)


def test_a_killed_worker_gives_back_its_pool_slot(tmp_path: Path) -> None:
    """A worker frees its op-concurrency slot as its step ends; killed mid-step it cannot.
    The launcher gives the slot back when it settles the run, and the next run's step gets it
    (the pool has one slot)."""
    pools = {"concurrency": {"pools": {"granularity": "op", "default_limit": 1}}}
    with instance_for_test(temp_dir=str(tmp_path), overrides={"run_launcher": LAUNCHER, **pools}) as instance, \
            served_location(instance) as process_context:
        first = launch(instance, process_context.create_request_context(), "pooled_waiting_job")
        wait_step_started(instance, first)
        assert instance.event_log_storage.get_concurrency_info("launcher_test_pool").active_run_ids == {first}
        os.kill(instance.run_launcher.worker_pid(first), signal.SIGKILL)  # type: ignore[attr-defined]
        assert finished(instance, first, timeout=10) == DagsterRunStatus.FAILURE

        def given_back() -> bool:  # just after the failure is recorded
            info = instance.event_log_storage.get_concurrency_info("launcher_test_pool")
            return not info.claimed_slots and not info.pending_steps

        wait_until(given_back, timeout=10, interval=0.1, what="the killed run's slot given back")
        second = launch(instance, process_context.create_request_context(), "pooled_waiting_job")
        wait_step_started(instance, second, "the next run's step took the slot")
        assert instance.run_launcher.terminate(second)  # type: ignore[attr-defined]
        assert finished(instance, second, timeout=30) == DagsterRunStatus.CANCELED


def test_run_monitoring_sees_a_worker_that_died_with_its_zygote(instance: DagsterInstance) -> None:
    """The whole group killed (daemon, zygote, worker): no exit notice comes. Run monitoring's
    health check finds the worker gone (and a live one running)."""
    from dagster._core.launcher.base import WorkerStatus

    launcher = instance.run_launcher
    with served_location(instance) as process_context:
        run_id = launch(instance, process_context.create_request_context(), "waiting_job")
        wait_until(lambda: instance.get_run_by_id(run_id).status == DagsterRunStatus.STARTED,  # type: ignore[union-attr]
                   timeout=60, interval=0.1, what="run started")
        run = instance.get_run_by_id(run_id)
        assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING  # type: ignore[attr-defined]
        pid = launcher.worker_pid(run_id)  # type: ignore[attr-defined]
        launcher.dispose()  # the zygote ends; its worker carries on, now without anyone to report it
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not is_forked_worker(pid), timeout=10, interval=0.1, what="worker gone")
        health = launcher.check_run_worker_health(run)  # type: ignore[attr-defined]
        assert health.status == WorkerStatus.FAILED and f"pid {pid}" in health.msg
        assert finished(instance, run_id, timeout=5) == DagsterRunStatus.FAILURE


def test_a_worker_lost_after_its_last_step_leaves_a_successful_run(instance: DagsterInstance) -> None:
    """Killed after every step succeeded (and the row was written) but before the worker
    recorded the run's end: the work is done, so the run is recorded as a success."""
    from dagster._core.events import DagsterEvent, DagsterEventType

    launcher = instance.run_launcher
    with served_location(instance) as process_context:
        run_id = launch(instance, process_context.create_request_context(), "report_job")
        assert finished(instance, run_id) == DagsterRunStatus.SUCCESS
        # Rewind the record to "started", as if the worker had died before writing the end.
        run = instance.get_run_by_id(run_id)
        instance.report_dagster_event(DagsterEvent(DagsterEventType.RUN_START.value, job_name=run.job_name), run_id=run_id)
        run = instance.get_run_by_id(run_id)
        assert run.status == DagsterRunStatus.STARTED
        assert launcher._settle_lost_worker(run, 12345, "was killed by signal 9")  # type: ignore[attr-defined]
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.SUCCESS
        assert any("after every step had succeeded" in m for m in messages(instance, run_id))


def test_a_run_is_forked_once_however_often_it_is_launched(instance: DagsterInstance) -> None:
    """Two daemons on one instance both dequeue a run: the second launch must not fork a
    second worker (it would start while the first is still starting, and both would run)."""
    from dagster._core.launcher import LaunchRunContext

    with served_location(instance) as process_context:
        workspace = process_context.create_request_context()
        run_id = launch(instance, workspace, "report_job")
        run = instance.get_run_by_id(run_id)
        instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=workspace))  # type: ignore[arg-type]
        assert finished(instance, run_id) == DagsterRunStatus.SUCCESS
        logged = messages(instance, run_id)
        assert sum(m.startswith("Started process for run") for m in logged) == 1
        assert any("already launched" in m for m in logged)


def test_a_reload_without_changes_keeps_the_zygote(instance: DagsterInstance) -> None:
    """The daemon reloads its workspace every 60 s, with a new code server each time: when no
    source changed, runs are still forked from the zygote that preloaded them."""
    with served_location(instance) as process_context:
        first = launch(instance, process_context.create_request_context(), "report_job")
        assert finished(instance, first) == DagsterRunStatus.SUCCESS
        (zygote,) = instance.run_launcher._zygotes.values()  # type: ignore[attr-defined]
        process_context.reload_code_location("launcher_test")
        second = launch(instance, process_context.create_request_context(), "report_job")
        assert finished(instance, second) == DagsterRunStatus.SUCCESS
        assert list(instance.run_launcher._zygotes.values()) == [zygote] and zygote.alive  # type: ignore[attr-defined]
        (line,) = [m for m in messages(instance, second) if m.startswith("{")]
        assert json.loads(line)["parent"] == zygote.process.pid


EDITED_LOCATION = """
from dagster import Definitions, in_process_executor, job, op

VERSION = {version}


@op
def report(context) -> None:
    context.log.info(f"version {{VERSION}}")


@job
def report_job() -> None:
    report()


defs = Definitions(jobs=[report_job], executor=in_process_executor)
"""


def test_an_edited_location_gets_a_new_zygote(instance: DagsterInstance, tmp_path: Path) -> None:
    """An edited source file must not run from a zygote holding the old code: the next run
    gets a new zygote, which runs the new code, and the old zygote is ended."""
    source = tmp_path / "edited_location.py"
    source.write_text(EDITED_LOCATION.format(version=1))
    with served_location(instance, "edited_location", tmp_path) as process_context:
        first = launch(instance, process_context.create_request_context(), "report_job")
        assert finished(instance, first) == DagsterRunStatus.SUCCESS
        assert "version 1" in messages(instance, first)
        (old,) = instance.run_launcher._zygotes.values()  # type: ignore[attr-defined]
        source.write_text(EDITED_LOCATION.format(version=2))
        os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
        process_context.reload_code_location("launcher_test")
        second = launch(instance, process_context.create_request_context(), "report_job")
        assert finished(instance, second) == DagsterRunStatus.SUCCESS
        assert "version 2" in messages(instance, second)
        (new,) = instance.run_launcher._zygotes.values()  # type: ignore[attr-defined]
        assert new is not old and old.process.poll() is not None
        assert WORKER_TAG in instance.get_run_by_id(second).tags  # type: ignore[union-attr]


def test_a_location_on_another_interpreter_is_launched_by_its_code_server(
    instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The zygote runs our interpreter; a run of a location on another one goes the default way."""
    with served_location(instance) as process_context:
        monkeypatch.setattr(sys, "executable", "/opt/other-venv/bin/python")
        run_id = launch(instance, process_context.create_request_context(), "report_job")
        monkeypatch.undo()
        assert finished(instance, run_id) == DagsterRunStatus.SUCCESS
        tags = instance.get_run_by_id(run_id).tags  # type: ignore[union-attr]
        assert WORKER_TAG not in tags and ".dagster/grpc_info" in tags
        assert not instance.run_launcher._zygotes  # type: ignore[attr-defined]


def test_is_forked_worker_refuses_other_processes() -> None:
    assert not is_forked_worker(os.getpid())
    assert not is_forked_worker(2**22 + 1)  # beyond pid_max: no such process


def _backends(database: str) -> int:
    """Connections open to ``database`` now, other than the caller's."""
    return services.server_value("SELECT count(*) FROM pg_stat_activity WHERE datname = :d"
                                 " AND pid <> pg_backend_pid()", d=database)


@contextmanager
def postgres_instance(tmp_path: Path) -> Iterator[tuple[DagsterInstance, WorkspaceProcessContext, sa.Engine, str]]:
    """An instance on PostgreSQL with the prefork launcher, its served location, an admin engine
    and the Dagster database's name."""
    with services.postgres_database("nolly_launcher") as url, \
            instance_for_test(temp_dir=str(tmp_path), overrides={
                "run_launcher": LAUNCHER, "storage": {"postgres": {"postgres_url": url}}}) as instance, \
            served_location(instance) as process_context:
        admin = sa.create_engine(services.admin_url(), poolclass=sa.pool.NullPool)
        try:
            yield instance, process_context, admin, sa.make_url(url).database  # type: ignore[misc]
        finally:
            admin.dispose()


def test_a_forked_worker_writes_its_run_over_few_connections(tmp_path: Path) -> None:
    """Stock Dagster connects to PostgreSQL anew for every event of a run (36 for this one-op
    job, ~50 for ours); a forked worker holds its connections while it works."""
    with postgres_instance(tmp_path) as (instance, process_context, admin, database):
        run_id = launch(instance, process_context.create_request_context(), "report_job")
        before = services.sessions_opened(database)  # the worker has just been forked
        # Wait without touching the database, so only the worker's connections are counted
        # (and the one the launcher opens when the worker's exit notice comes, to look at the run).
        workers = instance.run_launcher._workers  # type: ignore[attr-defined]  # pid -> run id, while running
        wait_until(lambda: run_id not in workers.values(), timeout=60, interval=0.1, what="worker exited")
        wait_until(lambda: services.sessions_opened(database) > before, timeout=10, interval=0.5,
                   what="statistics flushed")
        sessions = services.sessions_opened(database) - before
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.SUCCESS  # type: ignore[union-attr]
        events = len(instance.all_logs(run_id))
    assert events >= 10
    # Seen: the worker's storages open 6 while the instance starts (each checks its tables),
    # then the event log and the run storage hold one each; one more is the launcher's look
    # at the run when the worker exits. Stock workers: 36.
    assert sessions <= 12, f"{sessions} connections for {events} events"


def test_a_waiting_forked_worker_holds_no_connections(tmp_path: Path) -> None:
    """A worker that waits (here in its op; in production on a concurrency pool slot or a long
    prediction) closes its held connections once idle: many waiting workers must not exhaust
    PostgreSQL's ``max_connections``."""
    from nolly_pipeline.orchestration.worker_connections import IDLE_SECONDS

    with postgres_instance(tmp_path) as (instance, process_context, admin, database):
        run_id = launch(instance, process_context.create_request_context(), "waiting_job")
        wait_step_started(instance, run_id)
        wait_until(lambda: _backends(database) == 0, timeout=IDLE_SECONDS + 5, interval=0.2,
                   what="the waiting worker's connections closed")
        instance.run_launcher.terminate(run_id)
        # Its next events go over new connections.
        assert finished(instance, run_id) == DagsterRunStatus.CANCELED


def test_a_forked_worker_survives_its_database_connections_being_cut(tmp_path: Path) -> None:
    """A database restart or failover cuts the connections a worker holds; its next event must
    go over a new one (pinged before use), not fail the run."""
    with postgres_instance(tmp_path) as (instance, process_context, admin, database):
        run_id = launch(instance, process_context.create_request_context(), "pausing_job")
        wait_step_started(instance, run_id)
        with admin.connect() as conn:
            cut = conn.execute(sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = :d AND pid <> pg_backend_pid()"), {"d": database}).scalar_one()
        assert cut >= 1  # the worker's held connections, cut before its op ends
        assert finished(instance, run_id) == DagsterRunStatus.SUCCESS
