"""Helpers shared by the deployment tests: the repo's deployment files and their environment."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Iterator, Mapping

import pytest
import sqlalchemy as sa

from nolly_pipeline_tests import services

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "docker"
INSTANCE_FILES = (REPO_ROOT / "dagster.yaml", DOCKER_DIR / "dagster.yaml", DOCKER_DIR / "dagster.ecs.yaml")


def env_example() -> dict[str, str]:
    """``docker/.env.example`` as a mapping: the one list of every variable a deployment sets."""
    values: dict[str, str] = {}
    for line in (DOCKER_DIR / ".env.example").read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            values[match.group(1)] = match.group(2)
    return values


def dagster_postgres_env(url: str) -> dict[str, str]:
    """The ``DAGSTER_POSTGRES_*`` variables the production instance files read, for ``url``."""
    parsed = sa.make_url(url)
    return {
        "DAGSTER_POSTGRES_USER": parsed.username or "",
        "DAGSTER_POSTGRES_PASSWORD": parsed.password or "",
        "DAGSTER_POSTGRES_HOST": parsed.host or "127.0.0.1",
        "DAGSTER_POSTGRES_PORT": str(parsed.port or 5432),
        "DAGSTER_POSTGRES_DB": parsed.database or "",
    }


@pytest.fixture
def dagster_storage_env(postgres_url: str) -> Iterator[Mapping[str, str]]:
    """A fresh, empty database for Dagster's own storage, as ``DAGSTER_POSTGRES_*`` variables.

    ``postgres_url`` is requested only so a missing PostgreSQL skips (or, under CI, fails)
    the test the same way as everywhere else in the suite.
    """
    with services.postgres_database("nolly_dagster") as url:
        yield dagster_postgres_env(url)


@pytest.fixture(scope="session")
def dagster_bin() -> Path:
    """The dagster image's environment (its pins only); it must not be able to import the pipeline."""
    from nolly_pipeline_tests.deploy.images import dagster_only_venv

    bin_dir = dagster_only_venv()
    probe = subprocess.run([str(bin_dir / "python"), "-c", "import nolly_pipeline"], cwd="/", capture_output=True)
    assert probe.returncode != 0, "the dagster-only environment can import nolly_pipeline"
    return bin_dir
