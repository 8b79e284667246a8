"""Session-wide fixtures: real PostgreSQL, a real S3 server process, fresh schemas per test;
and the check that the suite leaves no process of its own running."""

from __future__ import annotations

import os
import signal
import time
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
from nolly_pipeline_tests.processes import SESSION_MARKER, marked_processes

if TYPE_CHECKING:
    from nolly_pipeline_tests.fakes.replicate_api import FakeReplicate

# boto3 needs credentials even for moto; never real ones in tests.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_REGION", "us-east-1")

# Inherited by every process the suite starts (daemons, code servers, run workers, moto), so
# the end-of-session check finds this session's leftovers and no other session's.
os.environ[SESSION_MARKER] = uuid.uuid4().hex
# Time the last processes get to exit after their fixtures have stopped them.
LEFTOVER_GRACE_SECONDS = 30.0


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Set up before, so torn down after, every other session fixture: then no process this
    session started may still run. Stragglers are killed, and the session fails naming them."""
    yield
    marker = f"{SESSION_MARKER}={os.environ[SESSION_MARKER]}"
    deadline = time.monotonic() + LEFTOVER_GRACE_SECONDS
    while (left := marked_processes(marker, exclude=os.getpid())) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, "processes started by the suite were still running at its end (now killed):\n" + "\n".join(
        f"  {pid}: {line[:300]}" for pid, line in left.items()
    )


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
