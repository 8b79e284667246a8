"""The code location loads, in the embedded default and in the S3/Replicate configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DefaultSensorStatus, EnvVar

from nolly_pipeline.config import Settings
from nolly_pipeline.definitions import build_definitions


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in list(__import__("os").environ):
        if key.startswith(("NOLLY_", "REPLICATE_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    return tmp_path


def test_embedded_default_needs_no_configuration(clean_env: Path) -> None:
    settings = Settings.from_env()
    assert settings.database_url == f"sqlite:///{clean_env / 'nolly.db'}"
    assert settings.storage == "local" and settings.local_storage_dir == clean_env / "storage"
    assert set(settings.backends.values()) == {"local"}
    defs = build_definitions(settings)
    repo = defs.get_repository_def()
    assert sorted(j for j in repo.job_names if not j.startswith("__")) == [
        "audio_clean_job", "color_grade_job", "roto_job"
    ]
    assert sorted(s.name for s in repo.sensor_defs) == [
        "job_cancellations", "job_reconciler", "partition_retention", "pending_jobs_sensor"
    ]
    assert sorted(k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()) == [
        "audio_clean", "color_grade", "roto"
    ]
    for name in ("roto_job", "color_grade_job", "audio_clean_job"):
        job = defs.resolve_job_def(name)
        assert job.executor_def.name == "in_process"
        nodes = {n.name: n.definition for n in job.graph.nodes[0].definition.nodes}
        assert sorted(nodes) == ["download", "predict", "publish"]
        assert nodes["predict"].name == "predict_local" and nodes["predict"].pool == "local_processing"
    sensor = defs.get_sensor_def("pending_jobs_sensor")
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 60


def test_s3_and_replicate_configuration_keeps_secrets_as_env_vars(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOLLY_STORAGE", "s3")
    monkeypatch.setenv("NOLLY_DATABASE_URL", "postgresql://svc:hunter2@db/nolly")
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_secret")
    monkeypatch.setenv("NOLLY_SENSOR_INTERVAL_SECONDS", "5")
    settings = Settings.from_env()
    assert set(settings.backends.values()) == {"replicate"}
    defs = build_definitions(settings)
    resources = defs.resources or {}
    assert resources["predictors"].replicate_api_token == EnvVar("REPLICATE_API_TOKEN")
    assert resources["job_store"].database_url == EnvVar("NOLLY_DATABASE_URL")
    assert "r8_secret" not in repr(resources) and "hunter2" not in repr(resources)
    assert defs.get_sensor_def("pending_jobs_sensor").minimum_interval_seconds == 5
    predict = {n.name: n.definition for n in defs.resolve_job_def("roto_job").graph.nodes[0].definition.nodes}["predict"]
    assert predict.pool == "replicate"  # concurrent Replicate calls are capped by the pool


def test_backend_override_per_type(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", "x")
    monkeypatch.setenv("NOLLY_BACKEND_COLOR_GRADE", "local")
    assert Settings.from_env().backends == {"roto": "replicate", "color-grade": "local", "audio-clean": "replicate"}
    monkeypatch.setenv("NOLLY_BACKEND_ROTO", "gpu-farm")
    with pytest.raises(ValueError, match="NOLLY_BACKEND_ROTO"):
        Settings.from_env()
