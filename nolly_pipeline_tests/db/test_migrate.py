"""``migrate`` creates the schema, is idempotent, and upgrades the seed's table in place."""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from nolly_pipeline.db import migrate
from nolly_pipeline.db.engine import get_engine
from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline.db.tables import metadata
from nolly_pipeline_tests.seed import SEED_JOBS_DDL, SEED_JOBS_DDL_SQLITE


def test_fresh_database_reaches_head_and_rerun_is_noop(any_db_url: str) -> None:
    engine = get_engine(any_db_url)
    assert migrate.current_revision(engine) is None
    assert migrate.upgrade(engine) == migrate.head_revision()
    assert migrate.upgrade(engine) == migrate.head_revision()
    assert migrate.current_revision(engine) == migrate.head_revision()


def test_migrated_schema_matches_table_definitions(any_db_url: str) -> None:
    """The code's tables and the migrations' tables must not drift apart."""
    engine = get_engine(any_db_url)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_server_default": False})
        diff = [
            d for d in compare_metadata(ctx, metadata)
            if not (isinstance(d, tuple) and d[0] == "remove_table" and d[1].name == migrate.VERSION_TABLE)
        ]
    assert diff == []


def test_seed_table_with_rows_is_upgraded_in_place(any_db_url: str) -> None:
    engine = get_engine(any_db_url)
    postgres = engine.dialect.name == "postgresql"
    user = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(sa.text(SEED_JOBS_DDL if postgres else SEED_JOBS_DDL_SQLITE))
        for status in ("done", "failed", "pending"):
            params = {"id": str(uuid.uuid4()) if not postgres else None, "u": str(user), "s": status,
                      "d": json.dumps({"file_url": "s3://vfx-assets/x.mp4", "settings": {}})}
            if postgres:
                conn.execute(sa.text(
                    "INSERT INTO jobs (user_id, type, status, input_data) VALUES (:u, 'roto', :s, CAST(:d AS JSONB))"
                ), params)
            else:
                conn.execute(sa.text(
                    "INSERT INTO jobs (id, user_id, type, status, input_data) VALUES (:id, :u, 'roto', :s, :d)"
                ), {**params, "id": uuid.UUID(params["id"]).hex})
    migrate.upgrade(engine)
    store = JobStore(engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT status, attempt FROM jobs ORDER BY status")).all()
    assert [(r[0], r[1]) for r in rows] == [("done", 0), ("failed", 0), ("pending", 0)]
    # The pending row left by the old worker is picked up by the new dispatcher.
    claimed = store.claim_dispatchable(10)
    assert [(r.status, r.attempt, r.input_data["file_url"]) for r in claimed] == [
        ("pending", 1, "s3://vfx-assets/x.mp4")
    ]


@pytest.mark.parametrize("rerun", [1, 2])
def test_seed_frontend_insert_still_works_after_migration(postgres_url: str, rerun: int) -> None:
    """The frontend inserts with the seed's columns only; defaults fill in the rest."""
    from nolly_pipeline_tests.conftest import _reset_schema

    engine = get_engine(postgres_url)
    _reset_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(SEED_JOBS_DDL))
    for _ in range(rerun):
        migrate.upgrade(engine)
    with engine.begin() as conn:
        job_id = conn.execute(sa.text(
            "INSERT INTO jobs (user_id, type, input_data) VALUES (gen_random_uuid(), 'roto', "
            "'{\"file_url\": \"s3://vfx-assets/a.mp4\"}'::jsonb) RETURNING id"
        )).scalar_one()
    row = JobStore(engine).get(job_id)
    assert row is not None and row.status == "pending" and row.attempt == 0 and row.dispatched_at is None
