"""docs/supabase.md replayed on plain PostgreSQL: the seed's schema, migrated, secured, processed.

Supabase itself is not available here, so what it contributes is stubbed minimally: an
``auth`` schema whose ``auth.uid()`` reads the ``request.jwt.claim.sub`` setting (as
PostgREST sets it from the JWT), the ``authenticated`` and ``service_role`` roles, Supabase's
default grants on ``public``, and a ``net.http_post`` that exists only so the seed's
``trigger_job_worker()`` compiles; it is never called. The RLS SQL is read from the doc's
marked block, so the doc and this test cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from pathlib import Path
from typing import Iterator

import boto3
import httpx
import pytest
import sqlalchemy as sa

from nolly_pipeline.db import migrate
from nolly_pipeline.db.engine import get_engine
from nolly_pipeline.db.job_rows import utcnow
from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline_tests import services
from nolly_pipeline_tests.deploy.conftest import REPO_ROOT
from nolly_pipeline_tests.fakes.replicate_api import Behavior, FakeReplicate
from nolly_pipeline_tests.fakes.versions import ROTO_VERSION
from nolly_pipeline_tests.media import tiny_video
from nolly_pipeline_tests.orchestration.conftest import Pipeline, pipeline_env, running_pipeline
from nolly_pipeline_tests.seed import SEED_JOBS_DDL


# The seed's cron target, verbatim from its guide ("Cron Configuration").
SEED_TRIGGER_FUNCTION = """
CREATE OR REPLACE FUNCTION public.trigger_job_worker()
RETURNS void AS $$
BEGIN
  PERFORM net.http_post(
    url := 'https://lmxspzfqhmdnqxtzusfy.supabase.co/functions/v1/job-worker',
    headers := jsonb_build_object(
      'Content-Type', 'application/json',
      'Authorization', 'Bearer <ANON_KEY>'
    ),
    body := '{}'::jsonb
  );
END;
$$ LANGUAGE plpgsql;
"""

# What a Supabase project has before any user SQL: roles, auth.uid(), default grants, pg_net.
SUPABASE_STUBS = [
    "DO $$ BEGIN CREATE ROLE anon NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    "DO $$ BEGIN CREATE ROLE authenticated NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    "DO $$ BEGIN CREATE ROLE service_role NOLOGIN BYPASSRLS; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    "CREATE SCHEMA auth",
    "CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS "
    "$$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$",
    "GRANT USAGE ON SCHEMA public, auth TO anon, authenticated, service_role",
    "GRANT ALL ON ALL TABLES IN SCHEMA public TO anon, authenticated, service_role",
    "CREATE SCHEMA net",
    "CREATE FUNCTION net.http_post(url text, headers jsonb, body jsonb) RETURNS bigint LANGUAGE sql AS $$ SELECT 0::bigint $$",
]


def rls_sql() -> str:
    """The SQL between the doc's ``supabase-rls`` markers (one fenced block)."""
    doc = (REPO_ROOT / "docs" / "supabase.md").read_text()
    match = re.search(r"<!-- supabase-rls:begin -->\s*```sql\n(.*?)```\s*<!-- supabase-rls:end -->", doc, re.DOTALL)
    assert match, "docs/supabase.md lost its supabase-rls block"
    return match.group(1)


def seed_database(engine: sa.Engine) -> None:
    """The seed's table and function, then `nolly-pipeline migrate`, then the doc's policies."""
    with engine.begin() as conn:
        conn.execute(sa.text(SEED_JOBS_DDL))
        conn.execute(sa.text(SEED_TRIGGER_FUNCTION))
    migrate.upgrade(engine)
    with engine.begin() as conn:
        for statement in SUPABASE_STUBS:
            conn.execute(sa.text(statement))
        conn.exec_driver_sql(rls_sql())


@pytest.fixture
def supabase_url(postgres_url: str) -> Iterator[str]:
    with services.postgres_database("nolly_supabase") as url:
        seed_database(get_engine(url))
        yield url
        get_engine(url).dispose()


def as_user(conn: sa.Connection, user: uuid.UUID | None, role: str = "authenticated") -> None:
    """Act as PostgREST does for a request: the role, and the JWT's subject for auth.uid()."""
    conn.execute(sa.text(f"SET LOCAL ROLE {role}"))
    conn.execute(sa.text("SELECT set_config('request.jwt.claim.sub', :sub, true)"), {"sub": str(user or "")})


def insert_job(conn: sa.Connection, user: uuid.UUID, **extra: str) -> uuid.UUID:
    columns = {"user_id": str(user), "type": "roto", "input_data": json.dumps({"file_url": "x"}), **extra}
    names = ", ".join(columns)
    values = ", ".join(f"CAST(:{k} AS JSONB)" if k == "input_data" else f":{k}" for k in columns)
    return conn.execute(sa.text(f"INSERT INTO jobs ({names}) VALUES ({values}) RETURNING id"), columns).scalar_one()


def test_rls_users_see_own_rows_and_cannot_write_status(supabase_url: str) -> None:
    engine = get_engine(supabase_url)
    alice, bob = uuid.uuid4(), uuid.uuid4()
    with engine.begin() as conn:  # the pipeline's connection: the table owner
        bobs_job = insert_job(conn, bob)
        conn.execute(
            sa.text("INSERT INTO notifications (id, user_id, job_id, kind, title, message, event_key) "
                    "VALUES (:id, :u, :j, 'job_done', 't', 'm', 'run-1')"),
            {"id": str(uuid.uuid4()), "u": str(bob), "j": str(bobs_job)},
        )

    with engine.begin() as conn:  # Alice submits a job, as the frontend does with her JWT
        as_user(conn, alice)
        alices_job = insert_job(conn, alice, status="pending")
        visible = conn.execute(sa.text("SELECT id FROM jobs")).scalars().all()
        assert visible == [alices_job]
        assert conn.execute(sa.text("SELECT count(*) FROM notifications")).scalar_one() == 0

    denied = [
        ("UPDATE jobs SET status = 'done' WHERE id = :id", alices_job),  # her own row, still no
        ("UPDATE jobs SET output_data = '{}'::jsonb WHERE id = :id", alices_job),
        ("DELETE FROM jobs WHERE id = :id", alices_job),
    ]
    for statement, job_id in denied:
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"), engine.begin() as conn:
            as_user(conn, alice)
            conn.execute(sa.text(statement), {"id": str(job_id)})
    for extra in ({"user_id": str(bob)}, {"status": "done"}):  # for someone else / already done
        with pytest.raises(sa.exc.ProgrammingError, match="row-level security"), engine.begin() as conn:
            as_user(conn, alice)
            insert_job(conn, alice, **extra)
    with pytest.raises(sa.exc.ProgrammingError, match="permission denied"), engine.begin() as conn:
        as_user(conn, alice)  # a bookkeeping column is not hers to set
        insert_job(conn, alice, dagster_run_id="forged")
    with engine.begin() as conn:  # Bob's notification: invisible to Alice, so not updatable
        as_user(conn, alice)
        assert conn.execute(sa.text("UPDATE notifications SET read = true")).rowcount == 0
    with engine.begin() as conn:
        as_user(conn, bob)
        assert conn.execute(sa.text("UPDATE notifications SET read = true")).rowcount == 1
    with engine.begin() as conn:  # an anonymous request sees nothing at all
        as_user(conn, None, role="anon")
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            conn.execute(sa.text("SELECT count(*) FROM jobs"))
    with engine.begin() as conn:  # the service role (an edge function's retry) writes status
        as_user(conn, None, role="service_role")
        assert conn.execute(sa.text("UPDATE jobs SET status = 'failed' WHERE id = :id"), {"id": str(alices_job)}).rowcount == 1


@pytest.fixture
def supabase_pipeline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, supabase_url: str, s3_endpoint: str, fake_replicate: FakeReplicate
) -> Iterator[Pipeline]:
    """The in-process pipeline of orchestration/conftest.py on the seeded database, with
    Supabase-style public URLs (``{base}/{bucket}/{key}``) for inputs and outputs."""
    env = pipeline_env(supabase_url, s3_endpoint, fake_replicate, tmp_path / "dagster_home")
    env["NOLLY_PUBLIC_BASE_URL"] = s3_endpoint
    with running_pipeline(monkeypatch, env, JobStore(get_engine(supabase_url)), s3_endpoint, fake_replicate) as p:
        # Public buckets, as in the seed: the upload returns a public URL, outputs is public.
        client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
        for bucket in ("vfx-assets", "outputs"):
            client.put_bucket_acl(Bucket=bucket, ACL="public-read")
        yield p


def test_seed_schema_drop_in_processes_a_job_as_the_frontend_expects(supabase_pipeline: Pipeline) -> None:
    p = supabase_pipeline
    p.fake.set_behavior(ROTO_VERSION, Behavior(starting=0, processing=1))
    user = uuid.uuid4()
    source = p.upload_input("clip.mp4", tiny_video(), user=user)  # s3://vfx-assets/<user>/...
    file_url = f"{p.settings.public_base_url}/{source.removeprefix('s3://')}"  # the seed's public URL
    engine = p.store.engine
    with engine.begin() as conn:  # the edge function's insert, with the user's JWT
        as_user(conn, user)
        job_id = insert_job(conn, user, input_data=json.dumps({"file_url": file_url, "settings": {}}))
    with engine.begin() as conn:  # the old cron target still compiles next to the new schema
        assert conn.execute(sa.text("SELECT to_regprocedure('public.trigger_job_worker()') IS NOT NULL")).scalar_one()

    (request,) = p.tick()
    assert p.execute(request).success

    # Read back exactly as useJobStatus does: as the user, through RLS, the seed's columns.
    with engine.begin() as conn:
        as_user(conn, user)
        row = conn.execute(
            sa.text("SELECT status, output_data, error_message, completed_at FROM jobs WHERE id = :id"),
            {"id": str(job_id)},
        ).one()
        (note,) = conn.execute(sa.text("SELECT kind, job_id FROM notifications")).all()
    assert row.status == "done" and row.error_message is None
    assert isinstance(row.completed_at, dt.datetime) and row.completed_at.tzinfo is None  # seed: TIMESTAMP
    assert abs(row.completed_at - utcnow()) < dt.timedelta(minutes=5)  # UTC, like the seed's now()
    assert set(row.output_data) >= {"output_url", "storage_path"}  # the seed's { output_url, storage_path }
    assert row.output_data["output_url"] == f"{p.settings.public_base_url}/outputs/{row.output_data['storage_path']}"
    # The download button's href works: the public URL serves the processed file.
    response = httpx.get(row.output_data["output_url"])
    assert response.status_code == 200 and response.content == b"FAKE-REPLICATE:" + tiny_video()
    assert (note.kind, note.job_id) == ("job_done", job_id)
