"""Held connections that let go when idle, on a real PostgreSQL (the worker side is tested
through forked workers in test_launcher.py)."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import instance_for_test
from sqlalchemy import event

from nolly_pipeline.orchestration.worker_connections import IdleConnections, remember_tables, running_in_daemon
from nolly_pipeline_tests import services


@contextmanager
def pooled_engine(ping_after: float) -> Iterator[tuple[sa.Engine, IdleConnections, str]]:
    """An engine holding one connection, watched by an IdleConnections of 0.2 s that pings
    after ``ping_after``; and the application name its connections carry."""
    name = f"nolly-idle-{uuid.uuid4().hex[:8]}"
    with services.postgres_database("nolly_idle") as url:
        engine = sa.create_engine(url, pool_size=1, max_overflow=5, connect_args={"application_name": name})
        idle = IdleConnections(idle_seconds=0.2, ping_after=ping_after)
        event.listen(engine, "checkin", idle.checked_in)
        event.listen(engine, "checkout", idle.checked_out)
        try:
            yield engine, idle, name
        finally:
            engine.dispose()


@pytest.fixture
def pooled() -> Iterator[tuple[sa.Engine, IdleConnections, str]]:
    with pooled_engine(ping_after=0.1) as pooled:
        yield pooled


def open_backends(name: str) -> int:
    return services.server_value("SELECT count(*) FROM pg_stat_activity WHERE application_name = :n", n=name)


def backend_pid(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()


def test_a_connection_in_use_again_soon_is_kept(pooled: tuple[sa.Engine, IdleConnections, str]) -> None:
    engine, idle, name = pooled
    first = backend_pid(engine)
    assert idle.close_idle() == 0  # just checked in
    assert backend_pid(engine) == first  # the same backend: no new connection
    assert open_backends(name) == 1


def test_an_idle_connection_is_closed_and_the_next_use_connects_anew(
    pooled: tuple[sa.Engine, IdleConnections, str],
) -> None:
    engine, idle, name = pooled
    first = backend_pid(engine)
    time.sleep(0.3)
    assert idle.close_idle() == 1
    assert open_backends(name) == 0  # the server process is gone
    assert backend_pid(engine) != first
    assert open_backends(name) == 1


def test_a_connection_checked_out_is_never_closed_under_its_user(
    pooled: tuple[sa.Engine, IdleConnections, str],
) -> None:
    engine, idle, _ = pooled
    backend_pid(engine)
    time.sleep(0.3)
    with engine.connect() as conn:  # taken out of the idle set on checkout
        time.sleep(0.3)
        assert idle.close_idle() == 0
        assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1


def last_query(pid: int) -> str:
    """The last statement the server process ``pid`` ran, as the server reports it."""
    return services.server_value("SELECT query FROM pg_stat_activity WHERE pid = :p", p=pid)


def test_a_connection_used_again_at_once_is_not_pinged(pooled: tuple[sa.Engine, IdleConnections, str]) -> None:
    """Events of a run follow each other by milliseconds: no round trip before each."""
    engine, _, _ = pooled
    pid = backend_pid(engine)
    with engine.connect():
        assert last_query(pid) == "ROLLBACK"  # the pool's reset at check-in; no ping since


def test_a_connection_unused_for_a_while_is_pinged(pooled: tuple[sa.Engine, IdleConnections, str]) -> None:
    engine, _, _ = pooled
    pid = backend_pid(engine)
    time.sleep(0.15)  # past ping_after (0.1 s), short of the idle close (0.2 s, not run here)
    with engine.connect():
        assert last_query(pid) == "SELECT 1"


@pytest.mark.parametrize("how", ["pg_terminate_backend", "pg_cancel_backend"])
def test_a_connection_the_server_wrote_to_is_replaced_without_a_ping(how: str) -> None:
    """A restart or an administrator ends a held connection with a message to it; the next
    checkout sees the unread data and connects anew, even right after the connection's last
    use (no ping then). A cancel of an idle connection writes nothing and keeps it."""
    with pooled_engine(ping_after=60) as (engine, _, _):
        first = backend_pid(engine)
        admin = sa.create_engine(services.admin_url(), poolclass=sa.pool.NullPool)
        with admin.connect() as conn:
            assert conn.execute(sa.text(f"SELECT {how}(:p)"), {"p": first}).scalar_one()
        admin.dispose()
        time.sleep(0.05)
        assert (backend_pid(engine) != first) == (how == "pg_terminate_backend")


def test_a_connection_closed_under_the_checkout_is_replaced(pooled: tuple[sa.Engine, IdleConnections, str]) -> None:
    """The idle reaper can close a connection after the pool handed it out and before the
    checkout's checks: they must treat it as gone (a new connection), not fail the caller."""
    engine, idle, _ = pooled
    first = backend_pid(engine)
    closed_once: list[bool] = []

    def close_first(dbapi_connection: object, _record: object, _proxy: object) -> None:
        if not closed_once:
            closed_once.append(True)
            dbapi_connection.close()  # type: ignore[attr-defined]

    event.listen(engine, "checkout", close_first, insert=True)  # runs before idle.checked_out
    assert backend_pid(engine) != first and closed_once


def test_a_cut_connection_is_replaced_on_checkout(pooled: tuple[sa.Engine, IdleConnections, str]) -> None:
    """A database restart cuts a held connection; the checks on checkout replace it."""
    engine, _, _ = pooled
    first = backend_pid(engine)
    admin = sa.create_engine(services.admin_url(), poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": first}).scalar_one()
    admin.dispose()
    time.sleep(0.1)
    assert backend_pid(engine) != first


def test_a_table_found_is_not_asked_for_again(tmp_path: Path) -> None:
    """On a real PostgreSQL instance: once the event log found a table, the answer comes from
    memory (the storage's engine is gone and it still answers); a missing one is asked again."""
    with services.postgres_database("nolly_tables") as url, instance_for_test(
        temp_dir=str(tmp_path), overrides={"storage": {"postgres": {"postgres_url": url}}}
    ) as instance:
        remember_tables(instance)
        storage = instance.event_log_storage
        assert storage.has_table("event_logs") is True
        assert storage.has_table("no_such_table") is False
        engine = storage._engine  # type: ignore[attr-defined]
        storage._engine = None  # type: ignore[attr-defined]  # any catalog query would fail now
        try:
            assert storage.has_table("event_logs") is True
            with pytest.raises(Exception, match="engine"):  # it asked: no engine to ask with
                storage.has_table("no_such_table")
        finally:
            storage._engine = engine  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("argv", "daemon"),
    [
        (["/venv/bin/dagster-daemon", "run", "-w", "workspace.yaml"], True),  # compose, ECS
        (["/venv/lib/python3.11/site-packages/dagster/_daemon/__main__.py", "run"], True),  # dagster dev
        (["/venv/bin/dagster-daemon", "liveness-check"], False),
        (["/venv/bin/dagster-webserver", "-w", "workspace.yaml"], False),
        (["-c"], False),
    ],
)
def test_only_the_daemon_process_is_recognised(monkeypatch: pytest.MonkeyPatch, argv: list[str], daemon: bool) -> None:
    monkeypatch.setattr(sys, "argv", argv)
    assert running_in_daemon() is daemon
