"""Real services the suite runs against: a PostgreSQL database and an S3 server process.

Each test session creates (and drops) its own PostgreSQL database. The S3 server is moto in
server mode, a separate process spoken to over HTTP by the real boto3 client.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa

DEFAULT_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def admin_url() -> str:
    from nolly_pipeline.db.engine import normalize_url

    return normalize_url(os.environ.get("NOLLY_TEST_DATABASE_URL") or DEFAULT_ADMIN_URL)


def server_value(statement: str, **params: object) -> Any:
    """One value read over a fresh admin connection, typically from the server's own views
    (``pg_stat_activity``, ``pg_stat_database``), whose statistics are read anew each call."""
    admin = sa.create_engine(admin_url(), poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
            return conn.execute(sa.text(statement), params).scalar_one()
    finally:
        admin.dispose()


def sessions_opened(database: str) -> int:
    """Connections ever opened to ``database``, as PostgreSQL's statistics count them."""
    return server_value("SELECT sessions FROM pg_stat_database WHERE datname = :d", d=database)


@contextmanager
def postgres_database(prefix: str = "nolly_test") -> Iterator[str]:
    """Create a fresh database on the admin server; yield its URL; drop it afterwards."""
    admin = sa.create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def s3_server(module: str = "moto.server", cwd: Path | None = None) -> Iterator[str]:
    """Run moto's server (S3 and the rest of AWS) as a subprocess on a free port; yield its
    endpoint URL. ``module`` may name a wrapper that patches moto before serving."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "-H", "127.0.0.1", "-p", str(port)],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
