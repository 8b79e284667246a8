"""The code location loads, in the embedded default and in the S3/Replicate configuration."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import AssetKey, DefaultScheduleStatus, DefaultSensorStatus, EnvVar

from nolly_pipeline.config import Settings
from nolly_pipeline.definitions import build_definitions
from nolly_pipeline.job_types import JOB_TYPES
from nolly_pipeline.orchestration.ticks import minimum_interval
from nolly_pipeline.processing.checks import CHECKS
from nolly_pipeline_tests.processes import kill_session


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in list(os.environ):
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
        "audio_clean_job", "color_grade_job", "job_stats_job", "roto_job"
    ]
    assert sorted(s.name for s in repo.sensor_defs) == [
        "job_cancellations", "job_reconciler", "partition_retention", "pending_jobs_sensor"
    ]
    assert sorted(k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()) == [
        "audio_clean", "color_grade", "job_stats", "roto"
    ]
    (schedule,) = repo.schedule_defs
    assert schedule.job_name == "job_stats_job" and schedule.default_status == DefaultScheduleStatus.RUNNING
    for name in ("roto_job", "color_grade_job", "audio_clean_job"):
        job = defs.resolve_job_def(name)
        assert job.executor_def.name == "in_process"
        nodes = {n.name: n.definition for n in job.graph.nodes[0].definition.nodes}
        assert sorted(nodes) == ["download", "predict", "publish"]
        assert nodes["predict"].name == "predict_local" and nodes["predict"].pool == "local_processing"
        # The type's asset checks run in its job (and in the implicit asset job, checked below).
        job_type = name.removesuffix("_job").replace("_", "-")
        expected = {(AssetKey(job_type.replace("-", "_")), check) for check in CHECKS[job_type]}
        assert {(k.asset_key, k.name) for k in job.asset_layer.asset_graph.asset_check_keys} == expected
    implicit = repo.get_implicit_global_asset_job_def()
    assert len(implicit.asset_layer.asset_graph.asset_check_keys) == sum(len(c) for c in CHECKS.values())
    sensor = defs.get_sensor_def("pending_jobs_sensor")
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == minimum_interval(60)  # ticks every 60 s (see test_ticks.py)


def test_dispatch_grace_outlasts_the_creation_of_a_whole_tick_of_runs(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reconciler must not release claims whose runs the daemon is still creating: the
    grace grows with the sensor's batch (1.5 s a run) over its 120 s floor, unless set."""
    assert Settings.from_env().dispatch_grace_seconds == 300  # batch 200
    monkeypatch.setenv("NOLLY_SENSOR_BATCH_SIZE", "20")
    assert Settings.from_env().dispatch_grace_seconds == 120
    monkeypatch.setenv("NOLLY_DISPATCH_GRACE_SECONDS", "45")
    assert Settings.from_env().dispatch_grace_seconds == 45


def test_s3_and_replicate_configuration_keeps_secrets_as_env_vars(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOLLY_STORAGE", "s3")
    monkeypatch.setenv("NOLLY_DATABASE_URL", "postgresql://svc:hunter2@db/nolly")
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_secret")
    monkeypatch.setenv("NOLLY_SENSOR_INTERVAL_SECONDS", "5")
    settings = Settings.from_env()
    assert settings.backends == {"roto": "replicate", "color-grade": "local", "audio-clean": "replicate"}
    defs = build_definitions(settings)
    resources = defs.resources or {}
    assert resources["predictors"].replicate_api_token == EnvVar("REPLICATE_API_TOKEN")
    assert resources["job_store"].database_url == EnvVar("NOLLY_DATABASE_URL")
    assert "r8_secret" not in repr(resources) and "hunter2" not in repr(resources)
    assert defs.get_sensor_def("pending_jobs_sensor").minimum_interval_seconds == minimum_interval(5)
    predict = {n.name: n.definition for n in defs.resolve_job_def("roto_job").graph.nodes[0].definition.nodes}["predict"]
    assert predict.pool == "replicate"  # concurrent Replicate calls are capped by the pool


def test_backend_override_per_type(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", "x")
    monkeypatch.setenv("NOLLY_BACKEND_COLOR_GRADE", "local")
    assert Settings.from_env().backends == {"roto": "replicate", "color-grade": "local", "audio-clean": "replicate"}
    monkeypatch.setenv("NOLLY_BACKEND_ROTO", "gpu-farm")
    with pytest.raises(ValueError, match="NOLLY_BACKEND_ROTO"):
        Settings.from_env()


def test_a_type_without_a_model_defaults_to_local_and_an_explicit_replicate_needs_one(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", "x")
    monkeypatch.setenv("NOLLY_REPLICATE_MODEL_COLOR_GRADE", "studio/grade")
    assert Settings.from_env().backends["color-grade"] == "replicate"  # a model and a token: Replicate
    monkeypatch.delenv("NOLLY_REPLICATE_MODEL_COLOR_GRADE")
    assert Settings.from_env().backends["color-grade"] == "local"
    monkeypatch.setenv("NOLLY_BACKEND_COLOR_GRADE", "Replicate")
    with pytest.raises(ValueError, match="set NOLLY_REPLICATE_MODEL_COLOR_GRADE"):
        Settings.from_env()
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    with pytest.raises(ValueError, match="set NOLLY_REPLICATE_MODEL_COLOR_GRADE"):
        Settings.from_env()


def validate_code_location(home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Load the code location as Dagster does, in its own process with only ``env`` configured.

    ``stdout`` holds the process's stdout and stderr together (Dagster logs to stdout).
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NOLLY_", "REPLICATE_"))}
    return subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-m", "nolly_pipeline.definitions"],
        env={**base, "DAGSTER_HOME": str(home), **env}, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=120,
    )


def backend_lines(output: str) -> list[str]:
    """The messages of the start-up log naming each type's backend (logger ``...nolly_pipeline``)."""
    return [line.rsplit(" - ", 1)[-1] for line in output.splitlines() if ".nolly_pipeline - " in line]


def test_start_up_logs_each_types_backend_once(clean_env: Path) -> None:
    result = validate_code_location(clean_env, REPLICATE_API_TOKEN="x")
    assert result.returncode == 0, result.stdout
    assert backend_lines(result.stdout) == [
        f"roto: replicate ({JOB_TYPES['roto'].replicate_default.ref})",
        "color-grade: local",
        f"audio-clean: replicate ({JOB_TYPES['audio-clean'].replicate_default.ref})",
    ]


def test_make_run_shows_each_types_backend_at_start_up(clean_env: Path) -> None:
    """The README's run command, as a newcomer starts it: ``dagster dev`` keeps its code
    servers at WARNING unless told otherwise, which hid the lines above from its output.

    Runs the command ``make run`` ends with, reads its output until the lines appear, then
    stops it as Ctrl-C does (SIGINT to its process group).
    """
    repo = Path(__file__).resolve().parents[1]
    dry_run = subprocess.run(["make", "-s", "-n", "run"], cwd=repo, capture_output=True, text=True, check=True)
    command = shlex.split(dry_run.stdout.strip().splitlines()[-1])
    assert command[1:3] == ["dev", "-w"], command
    shutil.copy(repo / "dagster.yaml", clean_env / "dagster.yaml")
    log = clean_env / "dev.log"
    with log.open("w") as out:
        dev = subprocess.Popen(command, cwd=repo, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while len(lines) < 3 and dev.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            lines = backend_lines(log.read_text())
    finally:
        os.killpg(dev.pid, signal.SIGINT)
        try:
            dev.wait(30)
        finally:
            kill_session(dev.pid)
    assert lines == ["roto: local", "color-grade: local", "audio-clean: local"], log.read_text()[-4000:]


def test_replicate_backend_without_a_model_stops_the_code_location_loading(clean_env: Path) -> None:
    result = validate_code_location(clean_env, REPLICATE_API_TOKEN="x", NOLLY_BACKEND_COLOR_GRADE="replicate")
    assert result.returncode != 0
    assert "ValueError: NOLLY_BACKEND_COLOR_GRADE=replicate" in result.stdout
    assert "set NOLLY_REPLICATE_MODEL_COLOR_GRADE" in result.stdout
