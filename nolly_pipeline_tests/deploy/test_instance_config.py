"""Every instance file in the repo passes Dagster's own validation and builds an instance.

Validation here is Dagster's: the instance schema (``dagster_instance_config``), then each
configurable class's schema with environment variables resolved, then
``DagsterInstance.from_config`` against a throwaway PostgreSQL database for the production
files, which also creates Dagster's tables there.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Mapping

import pytest
import yaml
from dagster import DagsterInstance
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._serdes import class_from_code_pointer

from nolly_pipeline.job_types import JOB_TYPES
from nolly_pipeline.orchestration.tags import JOB_TYPE_TAG, USER_ID_TAG
from nolly_pipeline_tests.deploy.conftest import DOCKER_DIR, INSTANCE_FILES, REPO_ROOT, env_example

PRODUCTION_FILES = (DOCKER_DIR / "dagster.yaml", DOCKER_DIR / "dagster.ecs.yaml")


def _env_refs(value: Any) -> set[str]:
    """Names in ``{env: NAME}`` references anywhere in a loaded YAML document."""
    if isinstance(value, dict):
        if set(value) == {"env"}:
            return {value["env"]}
        return set().union(*(_env_refs(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_env_refs(v) for v in value)) if value else set()
    return set()


def _validated(path: Path, tmp_path: Path) -> Mapping[str, Any]:
    home = tmp_path / path.parent.name
    home.mkdir(exist_ok=True)
    shutil.copy(path, home / "dagster.yaml")
    config, custom_class = dagster_instance_config(str(home))
    assert custom_class is None
    return config


@pytest.mark.parametrize("path", INSTANCE_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_instance_file_passes_dagsters_schema(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in env_example().items():
        monkeypatch.setenv(name, value)
    config = _validated(path, tmp_path)
    # Each pluggable class validates its own section, with {env: ...} resolved now.
    for section in ("run_coordinator", "run_launcher", "compute_logs"):
        if section in config:
            klass = class_from_code_pointer(config[section]["module"], config[section]["class"])
            result = process_config(klass.config_type(), config[section].get("config") or {})
            assert result.success, (section, [e.message for e in result.errors or []])


@pytest.mark.parametrize("path", INSTANCE_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_env_reference_is_in_env_example(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    names = _env_refs(document)
    launcher = (document.get("run_launcher") or {}).get("config") or {}
    names |= set(launcher.get("env_vars", []))
    assert names <= set(env_example()), sorted(names - set(env_example()))


@pytest.mark.parametrize("path", PRODUCTION_FILES, ids=lambda p: p.name)
def test_production_instance_on_postgres(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dagster_storage_env: Mapping[str, str],
) -> None:
    """A real instance on an empty database: storage, compute logs, queue, pools, limits."""
    for name, value in {**env_example(), **dagster_storage_env}.items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(path, home / "dagster.yaml")
    if path.name == "dagster.ecs.yaml":
        # The launcher's constructor creates boto3 clients only; no AWS call is made.
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    instance = DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.compute_log_manager).__name__ == "S3ComputeLogManager"
        assert instance.run_monitoring_max_resume_run_attempts == 0
        assert instance.run_retries_enabled and not instance.run_retries_retry_on_asset_or_op_failure
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None
        limits = {(limit["key"], str(limit.get("value"))): limit["limit"] for limit in queue.tag_concurrency_limits}
        for job_type in JOB_TYPES:
            assert (JOB_TYPE_TAG, job_type) in limits, job_type
        assert limits[(USER_ID_TAG, str({"applyLimitPerUniqueValue": True}))] >= 1
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 4 and pools.pool_granularity.value == "run"  # type: ignore[union-attr]
        # The Replicate pool is limited by the default without any `concurrency set`.
        replicate = instance.event_log_storage.get_concurrency_info("replicate")
        assert replicate.limit == 4 and replicate.using_default_limit
        if path.name == "dagster.ecs.yaml":
            assert type(instance.run_launcher).__name__ == "EcsRunLauncher"
            assert instance.run_launcher.run_resources == {"cpu": "1024", "memory": "2048", "ephemeral_storage": 50}
    finally:
        instance.dispose()


def test_ecs_file_is_the_compose_file_plus_a_launcher() -> None:
    """Storage, queue, limits and retention must not drift between the two production files."""
    compose = yaml.safe_load((DOCKER_DIR / "dagster.yaml").read_text())
    ecs = yaml.safe_load((DOCKER_DIR / "dagster.ecs.yaml").read_text())
    for section in ("storage", "compute_logs", "run_coordinator", "run_retries", "retention", "sensors"):
        assert compose[section] == ecs[section], section
    assert compose["concurrency"]["pools"] == ecs["concurrency"]["pools"]
    assert "run_launcher" not in compose and ecs["run_launcher"]["class"] == "EcsRunLauncher"
    # Tags the per-type task sizes are read from (EcsRunLauncher.get_cpu_and_memory_overrides).
    for job_type in JOB_TYPES.values():
        assert re.fullmatch(r"\d+", job_type.run_tags["ecs/cpu"]) and re.fullmatch(r"\d+", job_type.run_tags["ecs/memory"])
