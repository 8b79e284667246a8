"""validate_row: the same readable refusals whatever backend serves the job type."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from nolly_pipeline.db.job_rows import JobRow
from nolly_pipeline.errors import InputError, PermanentError
from nolly_pipeline.job_types import JOB_TYPES
from nolly_pipeline.predictors.base import Predictor
from nolly_pipeline.predictors.registry import PredictorConfig, build_predictor
from nolly_pipeline.storage.urls import HttpSource, ObjectRef
from nolly_pipeline.validation import SETTINGS_MODELS, settings_model, validate_row

USER = uuid.UUID("22222222-2222-4222-8222-222222222222")
BASE = "https://proj.supabase.co/storage/v1/object/public"
HOSTS = ["media.example.com"]


def row(job_type: str, input_data: Any) -> JobRow:
    fields = {name: None for name in JobRow.__dataclass_fields__}
    return JobRow(**{**fields, "id": uuid.uuid4(), "user_id": USER, "type": job_type, "input_data": input_data,
                     "attempt": 1, "max_attempts": 3})


def predictor(job_type: str, backend: str) -> Predictor:
    config = PredictorConfig(
        backends={name: backend for name in JOB_TYPES},
        replicate_models={"color-grade": ("studio/grade", '{"file_input": "input_video"}')},
        replicate_api_token="token",
        replicate_base_url="http://127.0.0.1:9",  # never called: validation is local
        replicate_timeout_seconds=10,
        replicate_poll_seconds=1,
        models_dir=Path("/nonexistent"),
    )
    return build_predictor(job_type, config)


def check(job_type: str, input_data: Any, backend: str = "local"):
    return validate_row(row(job_type, input_data), BASE, predictor(job_type, backend), HOSTS)


def test_every_job_type_has_a_settings_model() -> None:
    assert set(SETTINGS_MODELS) == set(JOB_TYPES)
    for job_type in JOB_TYPES.values():
        assert settings_model(job_type).model_config.get("extra") == "forbid"


@pytest.mark.parametrize("backend", ["local", "replicate"])
@pytest.mark.parametrize(
    "job_type, settings, message",
    [
        ("roto", {"smothing": 0.5}, "unknown setting 'smothing'"),
        ("roto", {"smoothing": 1.5}, "invalid setting 'smoothing': Input should be less than or equal to 1"),
        ("roto", {"format": "gif"}, "invalid setting 'format'"),
        ("roto", {"description": ["a"]}, "invalid setting 'description'"),
        ("color-grade", {"exposure": 4}, "invalid setting 'exposure'"),
        ("color-grade", {"preset": "noir", "lut_url": "s3://vfx-assets/u/a.cube"}, "set either lut_url or preset"),
        ("color-grade", {"brightness": 1}, "unknown setting 'brightness'"),
        ("audio-clean", {"denoise": "magic"}, "invalid setting 'denoise'"),
        ("audio-clean", {"loudness_lufs": 3}, "invalid setting 'loudness_lufs'"),
        ("audio-clean", {"gain_db": 3}, "unknown setting 'gain_db'"),
    ],
)
def test_bad_settings_are_named_on_every_backend(backend: str, job_type: str, settings: dict, message: str) -> None:
    with pytest.raises(InputError) as err:
        check(job_type, {"file_url": "s3://vfx-assets/u/a.mp4", "settings": settings}, backend)
    assert message in err.value.message


@pytest.mark.parametrize("backend", ["local", "replicate"])
def test_roto_accepts_the_frontends_description(backend: str) -> None:
    settings = {"description": "isolate the actor on the left", "smoothing": 0.2}
    spec = check("roto", {"file_url": "s3://vfx-assets/u/a.mp4", "settings": settings}, backend)
    assert spec.settings == settings and spec.source == ObjectRef("vfx-assets", "u/a.mp4")


def test_missing_backend_is_reported_before_settings() -> None:
    pred = build_predictor("color-grade", PredictorConfig(
        backends={"color-grade": "replicate"}, replicate_models={}, replicate_api_token="t",
        replicate_base_url=None, replicate_timeout_seconds=1, replicate_poll_seconds=1, models_dir=Path("/x"),
    ))
    with pytest.raises(PermanentError, match="no Replicate model configured"):
        validate_row(row("color-grade", {"file_url": "s3://vfx-assets/u/a.mp4", "settings": {"bad": 1}}),
                     None, pred, HOSTS)


@pytest.mark.parametrize(
    "url, expected",
    [
        ("https://media.example.com/takes/a%20b.mp4?sig=x", HttpSource("https://media.example.com/takes/a%20b.mp4?sig=x")),
        ("HTTP://MEDIA.EXAMPLE.COM/a.mp4", HttpSource("HTTP://MEDIA.EXAMPLE.COM/a.mp4")),
        (f"{BASE}/vfx-assets/u/a.mp4", ObjectRef("vfx-assets", "u/a.mp4")),
    ],
)
def test_allowed_sources(url: str, expected: object) -> None:
    assert check("roto", {"file_url": url}).source == expected


def test_http_source_gets_a_safe_local_name() -> None:
    assert HttpSource("https://media.example.com/a/..%2F..%2Fetc%2Fpasswd").filename == "passwd"
    assert HttpSource("https://media.example.com/").filename == "input"
    assert HttpSource("https://media.example.com/x/take%201%20(final).mov").filename == "take_1_final_.mov"


@pytest.mark.parametrize(
    "job_type, input_data, message",
    [
        ("sharpen", {"file_url": "s3://vfx-assets/u/a.mp4"}, "unknown job type 'sharpen'"),
        ("roto", None, "input_data must be a JSON object"),
        ("roto", {"file_url": 7}, "file_url is missing or not a string"),
        ("roto", {"file_url": "s3://vfx-assets/u/a.mp4", "settings": [1]}, "settings must be a JSON object, got list"),
        ("roto", {"file_url": "https://other.example.com/a.mp4"}, "unsupported file_url"),
        ("roto", {"file_url": "https://media.example.com.evil.io/a.mp4"}, "unsupported file_url"),
        ("roto", {"file_url": "https://evil.io#@media.example.com/a.mp4"}, "unsupported file_url"),
        ("roto", {"file_url": "https://media.example.com@evil.io/a.mp4"}, "unsupported file_url"),
        ("roto", {"file_url": "https://me:secret@media.example.com/a.mp4"}, "must not contain credentials"),
        ("roto", {"file_url": "ftp://media.example.com/a.mp4"}, "unsupported file_url"),
        ("roto", {"file_url": "http://[::1/a.mp4"}, "not a valid URL"),
        ("roto", {"file_url": "https://media.example.com:70000/a.mp4"}, "not a valid URL"),
        ("roto", {"file_url": "file:///etc/passwd"}, "unsupported file_url"),
    ],
)
def test_refused_rows(job_type: str, input_data: Any, message: str) -> None:
    with pytest.raises(InputError) as err:
        check(job_type, input_data)
    assert message in err.value.message and "secret" not in err.value.message


def test_no_allowed_hosts_means_storage_only() -> None:
    with pytest.raises(InputError, match="unsupported file_url"):
        validate_row(row("roto", {"file_url": "https://media.example.com/a.mp4"}), BASE, predictor("roto", "local"), [])
