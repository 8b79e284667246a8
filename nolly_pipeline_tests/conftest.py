"""Session-wide fixtures: real PostgreSQL, a real S3 server process, fresh schemas per test."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest
import sqlalchemy as sa

from nolly_pipeline.db import migrate
from nolly_pipeline.db.engine import get_engine
from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline.storage.objects import S3ObjectStore
from nolly_pipeline_tests import services
from nolly_pipeline_tests.media import tiny_video, tiny_wav, write_png

if TYPE_CHECKING:
    from nolly_pipeline_tests.fakes.replicate_api import FakeReplicate

# boto3 needs credentials even for moto; never real ones in tests.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_REGION", "us-east-1")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of its own for this test session. Under CI, no PostgreSQL is a failure."""
    try:
        with sa.create_engine(services.admin_url()).connect():
            pass
    except sa.exc.OperationalError as exc:
        message = f"PostgreSQL not reachable at {services.admin_url()}: {exc.orig}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with services.postgres_database() as url:
        yield url


def _reset_schema(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        else:
            for table in ("notifications", "jobs", migrate.VERSION_TABLE):
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nolly.db'}"
    url = request.getfixturevalue("postgres_url")
    _reset_schema(get_engine(url))
    return url


@pytest.fixture
def store(any_db_url: str) -> JobStore:
    """A migrated, empty schema on each backend."""
    engine = get_engine(any_db_url)
    migrate.upgrade(engine)
    return JobStore(engine)


@pytest.fixture
def pg_store(postgres_url: str) -> JobStore:
    engine = get_engine(postgres_url)
    _reset_schema(engine)
    migrate.upgrade(engine)
    return JobStore(engine)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with services.s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_store(s3_endpoint: str) -> S3ObjectStore:
    return S3ObjectStore.connect(s3_endpoint, "us-east-1")


@pytest.fixture
def user_id() -> uuid.UUID:
    return uuid.uuid4()


@pytest.fixture
def fake_replicate() -> Iterator["FakeReplicate"]:
    """A local HTTP fake of Replicate's API, spoken to by the real ``replicate`` client."""
    from nolly_pipeline_tests.fakes.replicate_api import FakeReplicate

    with FakeReplicate(token="test-token") as fake:
        yield fake


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """name -> bytes of every sample the input tests need."""
    clip = tiny_video()
    return {
        "clip.mp4": clip,
        "long.mp4": tiny_video(frames=50),  # 2 s at 25 fps
        "take.wav": tiny_wav(0.2),
        "long.wav": tiny_wav(2.0),
        "still.png": write_png(tmp_path_factory.mktemp("input-media") / "still.png").read_bytes(),
        "truncated.mp4": clip[: len(clip) // 3],
        "garbage.mp4": b"this is not a video" * 50,
        "empty.mp4": b"",
    }
