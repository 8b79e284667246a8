"""One SQLAlchemy engine per database URL per process.

Sensor ticks and ops build resources often; caching the engine keeps connection set-up off
that path. URLs are normalised so ``postgresql://`` means psycopg2 (which dagster-postgres
ships) rather than SQLAlchemy 2.1's default of psycopg 3.
"""

from __future__ import annotations

import functools
from pathlib import Path

import sqlalchemy as sa


def normalize_url(url: str) -> str:
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg2://" + url[len(bare):]
    return url


@functools.lru_cache(maxsize=8)
def get_engine(url: str) -> sa.Engine:
    url = normalize_url(url)
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            # WAL lets the sensor read while a run writes; foreign keys are off by default.
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # pre_ping: survive a PostgreSQL restart without failing the next job on a dead connection.
    return sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)
