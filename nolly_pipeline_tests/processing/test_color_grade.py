import numpy as np
import pytest

from nolly_pipeline.errors import InputError, PermanentError
from nolly_pipeline.processing.color_grade import (
    ColorGradeSettings,
    build_lut,
    color_grade,
    identity_grid,
    read_cube,
    write_cube,
)
from nolly_pipeline.processing.media import probe
from nolly_pipeline.processing.validation import parse_settings
from nolly_pipeline_tests.processing.reference import ffmpeg, packet_payloads, psnr, video_frames


def test_video_keeps_geometry_rate_count_duration_and_audio(video_clip, tmp_path):
    calls = []
    result = color_grade(
        video_clip, tmp_path, ColorGradeSettings(preset="teal-orange", exposure=0.5),
        progress=lambda done, total: calls.append((done, total)),
    )
    video, lut = result.files
    assert (video.role, video.content_type, lut.role) == ("video", "video/mp4", "lut")
    src, out = probe(video_clip), probe(video.path)
    assert (out.width, out.height, out.fps, out.frame_count) == (src.width, src.height, src.fps, 50)
    assert out.duration == pytest.approx(src.duration, abs=0.01)
    assert out.video_codec == "h264"
    assert packet_payloads(video.path, "audio") == packet_payloads(video_clip, "audio")
    assert calls[-1] == (50, 50) and all(d <= t for d, t in calls)


def test_phone_rotation_is_kept(video_clip, tmp_path):
    """A portrait phone clip is landscape frames plus a display rotation; keep the rotation."""
    phone = tmp_path / "phone.mp4"
    ffmpeg("-display_rotation:v:0", "90", "-i", str(video_clip), "-c", "copy", str(phone))
    assert probe(phone).rotation == 90
    out = color_grade(phone, tmp_path / "out", ColorGradeSettings(preset="warm")).files[0].path
    assert probe(out).rotation == 90


def test_lut_output_matches_ffmpeg_cli_lut3d(video_clip, tmp_path):
    # Lossless x264 on both sides: at crf 18 two encodes of the same frames already differ by
    # ~38 dB on testsrc2's noise patch, which would hide what this test checks (the filtering).
    settings = ColorGradeSettings(
        preset="bleach-bypass", contrast=1.2, temperature=0.3, intensity=0.8, crf=0
    )
    video, lut = color_grade(video_clip, tmp_path / "ours", settings).files
    reference = tmp_path / "reference.mp4"
    ffmpeg(
        "-i", str(video_clip), "-vf", f"lut3d=file={lut.path},format=yuv420p",
        "-c:v", "libx264", "-crf", "0", "-preset", "veryfast", "-an", str(reference),
    )
    ours, theirs, source = video_frames(video.path), video_frames(reference), video_frames(video_clip)
    assert len(ours) == len(theirs) == 50
    assert min(psnr(a, b) for a, b in zip(ours, theirs)) >= 40
    assert psnr(ours[0], source[0]) < 30  # the grade really changed the picture


@pytest.mark.parametrize("fixture,content_type", [("still_png", "image/png"), ("still_jpg", "image/jpeg")])
def test_still_image_graded_in_same_format(request, tmp_path, fixture, content_type):
    src = request.getfixturevalue(fixture)
    image = color_grade(src, tmp_path, ColorGradeSettings(preset="noir")).files[0]
    assert image.content_type == content_type and image.path.suffix == src.suffix
    info = probe(image.path)
    assert (info.kind, info.width, info.height) == ("image", 160, 120)
    pixels = video_frames(image.path)[0].astype(int)
    assert np.abs(pixels[..., 0] - pixels[..., 2]).mean() < 3  # noir is black and white


def test_neutral_settings_bake_identity_lut():
    assert np.allclose(build_lut(ColorGradeSettings()), identity_grid(), atol=1e-9)


def test_intensity_zero_is_identity_and_user_lut_is_applied(tmp_path):
    inverted = 1.0 - identity_grid(5)
    path = tmp_path / "invert.cube"
    write_cube(inverted, path, "invert")
    table = read_cube(path)
    assert np.allclose(build_lut(ColorGradeSettings(lut_url="x"), table), 1.0 - identity_grid(), atol=1e-6)
    assert np.allclose(build_lut(ColorGradeSettings(lut_url="x", intensity=0), table), identity_grid())


@pytest.mark.parametrize(
    "text,message",
    [
        ("LUT_1D_SIZE 4\n", "1D LUT"),
        ("LUT_3D_SIZE 2\n0 0 0\n1 1 1\n", "expected 8"),
        ("LUT_3D_SIZE 2\n" + "0 zero 0\n" * 8, "unreadable line"),
        ("0 0 0\n", "LUT_3D_SIZE"),
    ],
)
def test_bad_cube_files_are_input_errors(tmp_path, text, message):
    path = tmp_path / "bad.cube"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_cube(path)


@pytest.mark.parametrize(
    "raw,field",
    [
        ({"intensity": 1.5}, "intensity"),
        ({"exposure": -4}, "exposure"),
        ({"crf": 52}, "crf"),
        ({"preset": "sepia"}, "preset"),
        ({"x264_preset": "instant"}, "x264_preset"),
        ({"sharpen": 1}, "sharpen"),
    ],
)
def test_invalid_settings_name_the_field(raw, field):
    with pytest.raises(InputError, match=f"'{field}'"):
        parse_settings(ColorGradeSettings, raw)


def test_lut_and_preset_are_exclusive():
    with pytest.raises(InputError, match="either lut_url or preset"):
        parse_settings(ColorGradeSettings, {"lut_url": "s3://x.cube", "preset": "warm"})


def test_lut_url_without_downloaded_file_is_permanent(video_clip, tmp_path):
    with pytest.raises(PermanentError, match="not downloaded"):
        color_grade(video_clip, tmp_path, ColorGradeSettings(lut_url="https://example/x.cube"))


def test_corrupt_video_is_input_error(corrupt_files, tmp_path):
    with pytest.raises(InputError, match="^could not decode truncated.mp4: "):
        color_grade(corrupt_files["truncated.mp4"], tmp_path, ColorGradeSettings())
