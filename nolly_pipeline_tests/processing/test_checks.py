"""Output checks and previews on real processed media: they pass on good outputs, fail (without
raising) on bad ones, and previews stay small whatever the picture."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from nolly_pipeline.processing.audio_clean import audio_clean
from nolly_pipeline.processing.base import OutputFile
from nolly_pipeline.processing.checks import CHECKS, evaluate
from nolly_pipeline.processing.color_grade import color_grade
from nolly_pipeline.processing.models import selfie_model_path
from nolly_pipeline.processing.previews import MAX_BYTES, WIDTH, encode_png, render_preview
from nolly_pipeline.processing.roto import RotoSettings, roto
from nolly_pipeline.processing.settings import AudioCleanSettings, ColorGradeSettings
from nolly_pipeline_tests.processing import roto_fixtures
from nolly_pipeline_tests.processing.reference import ffmpeg
from nolly_pipeline_tests.processing.roto_fixtures import write_static_clip

models_dir = roto_fixtures.models_dir


def verdicts(assessment) -> dict[str, bool]:
    return {r.name: r.passed for r in assessment.results}


def preview_of(job_type: str, source: Path, outputs, tmp_path: Path) -> np.ndarray:
    preview = render_preview(job_type, source, outputs, tmp_path / "preview.png")
    assert preview.role == "preview" and preview.content_type == "image/png"
    assert 0 < preview.path.stat().st_size <= MAX_BYTES
    image = cv2.imread(str(preview.path), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[1] <= WIDTH
    return image


def test_colour_grade_passes_and_previews_before_and_after(video_clip: Path, tmp_path: Path) -> None:
    result = color_grade(video_clip, tmp_path / "out", ColorGradeSettings(preset="noir"))
    assessment = evaluate("color-grade", video_clip, result.files, {"preset": "noir"})
    assert verdicts(assessment) == {name: True for name in CHECKS["color-grade"]}
    assert assessment.measured["frames"] == 50 and assessment.measured["input_duration"] == pytest.approx(2.0, abs=0.05)
    image = preview_of("color-grade", video_clip, result.files, tmp_path)
    before, after = image[:, : WIDTH // 2], image[:, WIDTH // 2 :]
    # noir: the right half is grey, the left half (testsrc2) is colourful
    assert np.ptp(before.astype(int), axis=2).mean() > 20 > np.ptp(after.astype(int), axis=2).mean()


def test_a_short_or_broken_output_fails_its_checks_without_raising(video_clip: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.mp4"
    ffmpeg("-i", str(video_clip), "-t", "1", "-c", "copy", str(short))
    assessment = evaluate("color-grade", video_clip, [OutputFile(short, "video", "video/mp4")], {})
    assert verdicts(assessment) == {"output_decodes": True, "duration_matches": False, "frame_count_matches": False}
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"FAKE-REPLICATE:" + video_clip.read_bytes()[:500])
    assessment = evaluate("color-grade", video_clip, [OutputFile(broken, "video", "video/mp4")], {})
    assert not any(verdicts(assessment).values())
    assert all("does not decode" in r.description for r in assessment.results)


def test_audio_clean_lands_on_target_and_the_raw_input_does_not(tmp_path: Path) -> None:
    source = tmp_path / "tone.wav"
    roto_fixtures.write_tone(source, seconds=2.0)  # a -17 LUFS-ish tone, true peak about -14 dBTP
    settings = {"loudness_lufs": -23.0, "denoise": "off"}
    result = audio_clean(source, tmp_path / "out", AudioCleanSettings(**settings))
    assessment = evaluate("audio-clean", source, result.files, settings)
    assert verdicts(assessment) == {name: True for name in CHECKS["audio-clean"]}
    assert assessment.measured["output_lufs"] == pytest.approx(-23.0, abs=1.0)
    # The untouched input as "output": same length and rate, but 5+ LU off the target.
    unchanged = evaluate("audio-clean", source, [OutputFile(source, "audio", "audio/wav")], settings)
    assert verdicts(unchanged)["loudness_on_target"] is False and verdicts(unchanged)["duration_matches"]
    image = preview_of("audio-clean", source, result.files, tmp_path)
    assert image.shape[0] == 180  # two waveform strips


def test_roto_has_alpha_and_a_matte_and_an_empty_matte_is_flagged(models_dir: Path, tmp_path: Path) -> None:
    clip = tmp_path / "person.mp4"
    write_static_clip(clip, width=320, height=240, frames=10)
    result = roto(clip, tmp_path / "out", RotoSettings(), model_path=selfie_model_path(models_dir),
                  landscape_model_path=selfie_model_path(models_dir, landscape=True))
    assessment = evaluate("roto", clip, result.files, {})
    assert verdicts(assessment) == {name: True for name in CHECKS["roto"]}
    preview_of("roto", clip, result.files, tmp_path)

    # A still: RGBA cutout and grey matte PNGs.
    still = tmp_path / "person.png"
    cv2.imwrite(str(still), cv2.cvtColor(roto_fixtures.frame_with_person(320, 240)[0], cv2.COLOR_RGB2BGR))
    result = roto(still, tmp_path / "still", RotoSettings(), model_path=selfie_model_path(models_dir))
    assert verdicts(evaluate("roto", still, result.files, {})) == {name: True for name in CHECKS["roto"]}
    preview_of("roto", still, result.files, tmp_path)

    # A grey "matte" that is all black, delivered as an MP4 without alpha: two warnings.
    empty = tmp_path / "empty.mp4"
    ffmpeg("-i", str(clip), "-vf", "lutyuv=y=0:u=128:v=128", "-c:v", "libx264", str(empty))
    bad = evaluate("roto", clip, [OutputFile(empty, "matte", "video/mp4")], {})
    assert verdicts(bad)["has_alpha"] is False and verdicts(bad)["matte_not_empty_or_full"] is False
    assert verdicts(bad)["duration_matches"] and verdicts(bad)["frame_count_matches"]


def test_previews_of_busy_pictures_stay_under_budget() -> None:
    noise = np.random.default_rng(1).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    data = encode_png(cv2.resize(noise, (WIDTH, 270)))
    assert len(data) <= MAX_BYTES
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[1] >= 64


def test_every_declared_check_is_reported_even_without_output(video_clip: Path) -> None:
    for job_type, names in CHECKS.items():
        assessment = evaluate(job_type, video_clip, [], {})
        assert [r.name for r in assessment.results] == list(names)
        assert not any(r.passed for r in assessment.results)
