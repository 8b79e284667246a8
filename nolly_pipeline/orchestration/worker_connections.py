"""A forked run worker, and the daemon, hold their PostgreSQL connections and let go when idle.

Stock Dagster opens a new PostgreSQL connection for every event a run writes (``NullPool``):
36 for a one-op run, about 50 for ours. Each is a new server process that starts with cold
catalog caches: about 10 ms of server CPU before its first query, measured here, and in a
16-job burst the PostgreSQL server used half of the machine's CPU. A worker lives for one run,
so it can hold its connections as Dagster's webserver does (``optimize_for_webserver``), with
two guards that stock's connection per event gets for free:

* **checked before use**: a connection held across a database restart or failover is
  replaced, not used (what ``pool_pre_ping`` is for; ``optimize_for_webserver`` sets none).
  A server that ends a connection (shutdown, restart, ``pg_terminate_backend``) first writes
  its goodbye to it, so a connection with unread data is dropped without a round trip. One
  unused for :data:`PING_AFTER_SECONDS` or more is pinged as well (``SELECT 1``). Within a run,
  80% of events follow the one before by under 50 ms: a ping on every checkout doubled the
  round trips of event writing, and took 9% of a worker's samples under py-spy;
* **close when idle**: a connection unused for :data:`IDLE_SECONDS` is closed. A worker that
  waits (for a concurrency pool slot, for a long remote prediction) then holds none; held
  without this, ~34 workers left waiting on the ``replicate`` pool after code-server restarts
  exhausted PostgreSQL's ``max_connections``. The next use connects anew.

Only psycopg2 connections are touched; SQLite storage is left as it is.

The daemon is stock ``dagster-daemon``, whose only code of ours is the run launcher: the
launcher calls :func:`hold_in_daemon` when its instance is built. With the project's four
sensors, an idle daemon opened about 22 connections a second (11 for a bare job's one
sensor), and creating one asset run writes 6 planned events, each on a new connection;
new connections were 19% of the daemon's busy samples under py-spy.

Also for a worker's life: Dagster's PostgreSQL event log asks the catalog whether a table
exists before every asset event, asset check event and concurrency claim, about 12 times in
one of our runs (4% of a worker's samples); :func:`remember_tables` keeps the answers that
a table exists (:data:`has_table` of an existing table cannot turn false within a run).
"""

from __future__ import annotations

import functools
import os
import select
import sys
import threading
import time
from typing import Any

from sqlalchemy import event, exc, pool

# Long enough that a working run's events (milliseconds to a second apart) reuse a connection,
# short enough that a waiting worker gives its connections back within seconds.
IDLE_SECONDS = 2.0
# Held this long unused, a connection is pinged before use even though nothing was written to
# it: a failover to another machine at the same address sends no goodbye (the new server
# answers the old connection with a reset), and no such switch completes faster than this.
PING_AFTER_SECONDS = 0.5


class IdleConnections:
    """Pooled PostgreSQL connections checked in, with when; closes those idle too long."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS, ping_after: float = PING_AFTER_SECONDS) -> None:
        self.idle_seconds, self.ping_after = idle_seconds, ping_after
        self._lock = threading.Lock()
        self._since: dict[Any, float] = {}  # connection record -> monotonic time of check-in

    def checked_in(self, dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None and _is_postgres(dbapi_connection):
            with self._lock:
                self._since[record] = time.monotonic()

    def checked_out(self, dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # Taken out of the idle set before the checks: a connection closed by close_idle() just
        # before this point fails them and is replaced; after it, close_idle() skips it.
        with self._lock:
            since = self._since.pop(record, None)
        if not _is_postgres(dbapi_connection):
            return
        if _has_unread_data(dbapi_connection):
            raise exc.DisconnectionError("the server wrote to an idle connection: it ended it")
        # No check-in time: the connection is new (just connected), nothing to ping.
        if since is not None and time.monotonic() - since >= self.ping_after:
            ping(dbapi_connection)

    def close_idle(self) -> int:
        """Close the connections idle for ``idle_seconds`` or more (their pool slot stays and
        reconnects on next use); return how many."""
        now = time.monotonic()
        with self._lock:
            stale = [record for record, since in self._since.items() if now - since >= self.idle_seconds]
            for record in stale:
                del self._since[record]
                record.invalidate()
        return len(stale)


def _is_postgres(dbapi_connection: Any) -> bool:
    return type(dbapi_connection).__module__.startswith("psycopg2")


def _has_unread_data(dbapi_connection: Any) -> bool:
    """Whether the server sent something since the last statement's reply was read, or the
    connection is closed already (the idle reaper may close it between the pool handing it
    out and this check).

    An idle connection receives nothing unless the server ends it (an error message, then
    end of file) or sends a notice; either way, a new connection is the safe choice."""
    try:
        if dbapi_connection.closed:
            return True
        readable, _, _ = select.select([dbapi_connection.fileno()], [], [], 0)
    except Exception:  # noqa: BLE001 - psycopg2's InterfaceError, OSError: not usable
        return True
    return bool(readable)


def ping(dbapi_connection: Any) -> None:
    """``SELECT 1``; a failure makes the pool discard the connection and connect anew."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT 1")
    except Exception as error:  # noqa: BLE001 - any failure means: not usable
        raise exc.DisconnectionError() from error
    finally:
        try:
            cursor.close()
        except Exception:  # noqa: BLE001 - a dead connection's cursor may fail to close
            pass


def hold_connections(instance: Any, idle_seconds: float = IDLE_SECONDS) -> IdleConnections:
    """Make ``instance``'s storages hold their connections, checked before use and closed
    when idle (by a daemon thread: it never keeps the process alive). Call once per process."""
    # No statement timeout (0), as for a stock worker; extra threads get their own connection,
    # closed when returned beyond the one held.
    instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=20)
    idle = IdleConnections(idle_seconds)
    event.listen(pool.Pool, "checkin", idle.checked_in)
    event.listen(pool.Pool, "checkout", idle.checked_out)

    def reap() -> None:
        while True:
            time.sleep(idle_seconds / 4)
            idle.close_idle()

    threading.Thread(target=reap, name="nolly-idle-connections", daemon=True).start()
    return idle


def running_in_daemon() -> bool:
    """Whether this process is ``dagster-daemon run`` (as compose and ECS start it) or
    ``python -m dagster._daemon run`` (as ``dagster dev`` does)."""
    program = sys.argv[0] if sys.argv else ""
    daemon = os.path.basename(program) == "dagster-daemon" or program.endswith(
        os.path.join("dagster", "_daemon", "__main__.py"))
    return daemon and sys.argv[1:2] == ["run"]


def hold_in_daemon(instance: Any) -> IdleConnections | None:
    """In the daemon process, :func:`hold_connections` for its instance (which every daemon
    thread shares); elsewhere nothing (the webserver holds its own, workers are forked)."""
    return hold_connections(instance) if running_in_daemon() else None


def remember_tables(instance: Any) -> None:
    """Answer the event log's ``has_table`` from memory once a table was found (see module
    docs). A missing table is asked again: a migration may add it while the run works."""
    storage = getattr(instance, "event_log_storage", None)
    asked = getattr(storage, "has_table", None)
    if asked is None:
        return
    found: set[str] = set()

    @functools.wraps(asked)
    def has_table(table_name: str) -> bool:
        if table_name in found:
            return True
        exists = bool(asked(table_name))
        if exists:
            found.add(table_name)
        return exists

    storage.has_table = has_table  # type: ignore[union-attr]
