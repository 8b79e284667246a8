"""A run worker imports only what a run of its configuration uses.

Every run worker is a fresh interpreter that imports the code location before its first op,
so whatever ``nolly_pipeline.definitions`` imports is paid by every job. Clients of backends
the configuration does not use (boto3 with local storage, the Replicate client when no type
runs on Replicate) and the media stack (only ``predict`` needs it) must stay out. Each case
imports the code location in a subprocess with exactly that configuration's environment,
as ``dagster api execute_run`` does, and then checks the backends do load once used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Imported by a run only inside the processing calls (local backends) or never.
MEDIA = ("numpy", "av", "cv2", "scipy", "pyrnnoise", "onnxruntime", "PIL", "matplotlib", "pandas")
S3_CLIENT = ("boto3", "botocore", "s3transfer", "dagster_aws")
REPLICATE_CLIENT = ("replicate", "httpx", "httpcore", "idna")

# What the subprocess runs: import the code location, then optionally use the backends.
SCRIPT = """
import json, sys
import nolly_pipeline.definitions as location
imported = sorted({name.split(".")[0] for name in sys.modules})
used = None
if sys.argv[1] == "use":
    resources = location.defs.resources
    resources["storage"].store()
    for job_type in ("roto", "color-grade", "audio-clean"):
        resources["predictors"].predictor(job_type)
    used = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"imported": imported, "used": used}))
"""


def run_isolated(tmp_path: Path, script: str, env: dict[str, str], *args: str) -> Any:
    """Run ``script`` in a fresh interpreter whose only pipeline configuration is ``env`` (as a
    run worker of that configuration starts); return the JSON of its last output line."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NOLLY_", "REPLICATE_", "AWS_"))}
    base.update({"DAGSTER_HOME": str(tmp_path), **env})
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO_ROOT, env=base, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def import_code_location(tmp_path: Path, env: dict[str, str], use: bool = False) -> dict[str, set[str]]:
    """Top-level modules loaded by importing the code location (and, with ``use``, after
    opening the storage and building every type's predictor) under exactly ``env``."""
    loaded = run_isolated(tmp_path, SCRIPT, env, "use" if use else "import")
    return {key: set(value or ()) for key, value in loaded.items()}


S3 = {"NOLLY_STORAGE": "s3", "NOLLY_S3_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k",
      "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "us-east-1"}
REPLICATE = {"REPLICATE_API_TOKEN": "r8_test", "NOLLY_REPLICATE_MODEL_COLOR_GRADE": "studio/grade",
             "NOLLY_REPLICATE_INPUT_COLOR_GRADE": '{"file_input": "input_video"}'}


@pytest.mark.parametrize(
    ("env", "unused"),
    [
        pytest.param({}, MEDIA + S3_CLIENT + REPLICATE_CLIENT, id="embedded-default"),
        pytest.param(S3, MEDIA + REPLICATE_CLIENT, id="s3-local-backends"),
        pytest.param(REPLICATE, MEDIA + S3_CLIENT, id="local-storage-replicate"),
        # One type on Replicate is enough to need its client, but never boto3 on local storage.
        pytest.param({**REPLICATE, "NOLLY_BACKEND_ROTO": "local", "NOLLY_BACKEND_COLOR_GRADE": "local"},
                     MEDIA + S3_CLIENT, id="one-type-on-replicate"),
        pytest.param({**S3, **REPLICATE}, MEDIA, id="production"),
    ],
)
def test_code_location_imports_nothing_the_configuration_does_not_use(
    tmp_path: Path, env: dict[str, str], unused: tuple[str, ...]
) -> None:
    imported = import_code_location(tmp_path, env)["imported"]
    assert "nolly_pipeline" in imported and "dagster" in imported
    assert not imported & set(unused), f"importing the code location loaded {sorted(imported & set(unused))}"


def test_backends_load_their_clients_once_used(tmp_path: Path) -> None:
    """The deferred imports work: opening S3 storage loads boto3, a Replicate predictor its
    client; and even then the media stack waits for a local prediction."""
    loaded = import_code_location(tmp_path, {**S3, **REPLICATE}, use=True)
    assert not loaded["imported"] & {"boto3", "replicate"}
    assert {"boto3", "botocore", "replicate", "httpx"} <= loaded["used"]
    assert not loaded["used"] & {"av", "cv2", "scipy"}
