"""Local roto against a real person photo: coverage, stability, and outputs that keep alpha."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from nolly_pipeline.errors import InputError
from nolly_pipeline.processing import roto_outputs
from nolly_pipeline.processing.base import ProcessingResult
from nolly_pipeline.processing.models import selfie_model_path
from nolly_pipeline.processing.roto import RotoSettings, roto
from nolly_pipeline.processing.validation import parse_settings
from nolly_pipeline_tests.processing import roto_fixtures
from nolly_pipeline_tests.processing.roto_fixtures import (
    astronaut,
    background_mask,
    frame_with_person,
    iou,
    person_mask,
    place,
    write_static_clip,
    write_tone,
)

WIDTH, HEIGHT, FRAMES, FPS = 640, 360, 25, 25

models_dir = roto_fixtures.models_dir  # the session-wide model cache fixture


def _roto(src: Path, out: Path, models: Path, progress=None, **settings) -> ProcessingResult:
    kwargs = {"progress": progress} if progress else {}
    return roto(
        src,
        out,
        RotoSettings(**settings),
        model_path=selfie_model_path(models),
        landscape_model_path=selfie_model_path(models, landscape=True),
        **kwargs,
    )


def _decode(path: Path) -> tuple[list[np.ndarray], av.VideoFrame, Fraction, float]:
    """Every frame's alpha (or luma, for video without alpha), the first frame, rate, duration.

    VP9 keeps alpha in a side channel that only libvpx's decoder reads; FFmpeg's native vp9
    decoder silently drops it, so WebM is decoded with ``libvpx-vp9`` explicitly.
    """
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoder = stream.codec_context
        if decoder.name == "vp9":
            decoder = av.CodecContext.create("libvpx-vp9", "r")
        planes, first = [], None
        for packet in container.demux(stream):
            for frame in decoder.decode(packet if packet.size else None):
                first = first or frame
                if "a" in frame.format.name.replace("yuv", ""):  # yuva420p, yuva444p10le
                    planes.append(_alpha(frame))
                else:
                    planes.append(frame.to_ndarray(format="gray"))
        rate = stream.average_rate
        duration = float(container.duration / av.time_base)
    assert first is not None
    return planes, first, rate, duration


def _alpha(frame: av.VideoFrame) -> np.ndarray:
    rgba = frame.to_ndarray(format="rgba" if frame.format.name == "yuva420p" else "rgba64le")
    alpha = rgba[..., 3]
    return (alpha >> 8).astype(np.uint8) if alpha.dtype == np.uint16 else alpha


def _audio_codec(path: Path) -> str | None:
    with av.open(str(path)) as container:
        return container.streams.audio[0].codec_context.name if container.streams.audio else None


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[int, int, int]]:
    """A locked-off 16:9 shot of the astronaut with grain, and AAC audio."""
    path = tmp_path_factory.mktemp("clip") / "static.mp4"
    placement = write_static_clip(
        path, width=WIDTH, height=HEIGHT, frames=FRAMES, fps=FPS, audio="aac"
    )
    return path, placement


@pytest.fixture(scope="module")
def clip_result(
    clip: tuple[Path, tuple[int, int, int]],
    models_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[ProcessingResult, list[tuple[int, int]]]:
    calls: list[tuple[int, int]] = []
    out = tmp_path_factory.mktemp("roto-out")
    result = _roto(
        clip[0], out, models_dir, progress=lambda d, t: calls.append((d, t)), format="prores"
    )
    return result, calls


# --- settings and errors -------------------------------------------------------------------


def test_unknown_setting_is_an_input_error_naming_the_field() -> None:
    with pytest.raises(InputError, match="unknown setting 'feather'"):
        parse_settings(RotoSettings, {"feather": 3})


def test_out_of_range_setting_names_the_field() -> None:
    with pytest.raises(InputError, match="invalid setting 'smoothing'"):
        parse_settings(RotoSettings, {"smoothing": 2})
    with pytest.raises(InputError, match="invalid setting 'format'"):
        parse_settings(RotoSettings, {"format": "gif"})


def test_defaults() -> None:
    settings = parse_settings(RotoSettings, None)
    assert (settings.format, settings.refine_edges) == ("webm", False)
    assert 0 < settings.smoothing < 1


def test_audio_only_input_is_rejected(tmp_path: Path, models_dir: Path) -> None:
    write_tone(tmp_path / "voice.wav")
    with pytest.raises(InputError, match="roto needs a video or image, got audio"):
        _roto(tmp_path / "voice.wav", tmp_path / "out", models_dir)


def test_corrupt_input_is_an_input_error(tmp_path: Path, models_dir: Path) -> None:
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500)
    with pytest.raises(InputError, match="could not decode broken.mp4"):
        _roto(tmp_path / "broken.mp4", tmp_path / "out", models_dir)


# --- still images --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_still_photo_matte_covers_the_person(tmp_path: Path, models_dir: Path, suffix: str) -> None:
    src = tmp_path / f"astronaut{suffix}"
    bgr = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(src), bgr)
    result = _roto(src, tmp_path / "out", models_dir)

    assert [(f.role, f.content_type, f.path.name) for f in result.files] == [
        ("cutout", "image/png", "astronaut_cutout.png"),
        ("matte", "image/png", "astronaut_matte.png"),
    ]
    cutout = cv2.imread(str(result.files[0].path), cv2.IMREAD_UNCHANGED)
    matte = cv2.imread(str(result.files[1].path), cv2.IMREAD_UNCHANGED)
    assert cutout.shape == (512, 512, 4) and matte.shape == (512, 512)
    assert np.array_equal(cutout[..., 3], matte)
    if suffix == ".png":  # lossless in, so the cutout's colour is the photo's
        assert np.array_equal(cutout[..., :3], bgr)
    alpha = matte / 255.0
    assert alpha[person_mask()].mean() > 0.9
    assert alpha[background_mask()].mean() < 0.1
    assert iou(alpha > 0.5, person_mask()) > 0.65


def test_edge_refinement_keeps_the_person(tmp_path: Path, models_dir: Path) -> None:
    src = tmp_path / "astronaut.png"
    cv2.imwrite(str(src), cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR))
    plain = cv2.imread(str(_roto(src, tmp_path / "plain", models_dir).files[1].path), 0)
    refined = cv2.imread(
        str(_roto(src, tmp_path / "ref", models_dir, refine_edges=True).files[1].path), 0
    )
    assert not np.array_equal(plain, refined)
    alpha = refined / 255.0
    assert alpha[person_mask()].mean() > 0.85
    assert alpha[background_mask()].mean() < 0.1
    assert iou(refined > 127, plain > 127) > 0.85


# --- video ---------------------------------------------------------------------------------


def test_video_outputs_in_order(clip_result) -> None:
    result, _ = clip_result
    assert [(f.role, f.content_type, f.path.suffix) for f in result.files] == [
        ("video", "video/webm", ".webm"),
        ("matte", "video/mp4", ".mp4"),
        ("prores", "video/quicktime", ".mov"),
    ]
    assert all(f.path.stat().st_size > 0 for f in result.files)
    meta = result.metadata
    assert (meta["width"], meta["height"], meta["frame_count"], meta["fps"]) == (
        WIDTH,
        HEIGHT,
        FRAMES,
        FPS,
    )
    assert meta["model"] == "selfie_segmentation_landscape.tflite"  # 16:9 uses the wide model


def test_outputs_keep_geometry_rate_count_duration_and_alpha(clip_result, clip) -> None:
    result, _ = clip_result
    with av.open(str(clip[0])) as source:
        source_duration = float(source.duration / av.time_base)
    # FFmpeg's ProRes decoder hands 4444 out as 12-bit; what matters is 4:4:4 with alpha.
    expected_formats = {"video": "yuva420p", "matte": "yuv420p", "prores": "yuva444p"}
    for output in result.files:
        planes, first, rate, duration = _decode(output.path)
        assert (first.width, first.height) == (WIDTH, HEIGHT), output.role
        assert first.format.name.startswith(expected_formats[output.role]), output.role
        assert len(planes) == FRAMES, output.role
        assert rate == FPS, output.role
        assert duration == pytest.approx(source_duration, abs=0.05), output.role


def test_alpha_covers_the_person_and_matches_the_matte_video(clip_result, clip) -> None:
    result, (_, placement) = clip_result[0], clip
    person = place(person_mask(), WIDTH, HEIGHT, placement)
    wall = place(background_mask(), WIDTH, HEIGHT, placement)
    webm, _, _, _ = _decode(result.files[0].path)
    grey, _, _, _ = _decode(result.files[1].path)
    prores, _, _, _ = _decode(result.files[2].path)
    for alpha in (webm[0], webm[-1], prores[-1]):
        assert alpha[person].mean() / 255 > 0.9
        assert alpha[wall].mean() / 255 < 0.1
        assert alpha[:, :100].mean() / 255 < 0.05  # the plain wall beside the photo
    # Decoding to "gray" undoes the video's limited range, so values compare directly.
    assert np.abs(grey[0].astype(np.float32) - webm[0]).mean() < 4


def test_matte_is_stable_on_a_static_shot(clip_result) -> None:
    result, _ = clip_result
    alphas, _, _, _ = _decode(result.files[0].path)
    masks = [alpha > 127 for alpha in alphas]
    scores = [iou(a, b) for a, b in zip(masks, masks[1:])]
    assert min(scores) >= 0.98, scores


def test_smoothing_reduces_flicker(clip, models_dir: Path, tmp_path: Path) -> None:
    def flicker(smoothing: float) -> float:
        result = _roto(clip[0], tmp_path / str(smoothing), models_dir, smoothing=smoothing)
        alphas = [a.astype(np.float32) for a in _decode(result.files[0].path)[0]]
        return float(np.mean([np.abs(a - b).mean() for a, b in zip(alphas, alphas[1:])]))

    assert flicker(0.9) < flicker(0.0)


def test_audio_is_carried_into_every_output(clip_result) -> None:
    result, _ = clip_result
    # WebM only allows Opus/Vorbis: AAC is re-encoded there and copied elsewhere.
    assert [_audio_codec(f.path) for f in result.files] == ["opus", "aac", "aac"]


def test_progress_counts_frames(clip_result) -> None:
    _, calls = clip_result
    assert calls[-1] == (FRAMES, FRAMES)
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(calls) >= FRAMES // 2


def test_pcm_audio_and_portrait_video(tmp_path: Path, models_dir: Path) -> None:
    src = tmp_path / "portrait.mov"
    write_static_clip(src, width=240, height=320, frames=6, fps=24, audio="pcm_s16le")
    result = _roto(src, tmp_path / "out", models_dir)
    assert result.metadata["model"] == "selfie_segmentation.tflite"
    assert [_audio_codec(f.path) for f in result.files] == ["opus", "aac"]
    for output in result.files:
        planes, first, rate, _ = _decode(output.path)
        assert (first.width, first.height, len(planes), rate) == (240, 320, 6, 24)


def test_video_without_audio(tmp_path: Path, models_dir: Path) -> None:
    src = tmp_path / "silent.mp4"
    write_static_clip(src, width=320, height=180, frames=4)
    result = _roto(src, tmp_path / "out", models_dir)
    assert [_audio_codec(f.path) for f in result.files] == [None, None]
    assert result.metadata["has_audio"] is False


def test_an_encoder_failure_surfaces_without_hanging(
    tmp_path: Path,
    models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = tmp_path / "clip.mp4"
    write_static_clip(src, width=320, height=180, frames=30, audio="aac")
    write = roto_outputs.Writer._write

    def failing_write(self, item):
        if self.spec.role == "matte":
            raise OSError("disk full")
        write(self, item)

    monkeypatch.setattr(roto_outputs.Writer, "_write", failing_write)
    with pytest.raises(RuntimeError, match="encoding clip_matte.mp4 failed"):
        _roto(src, tmp_path / "out", models_dir)


def test_phone_portrait_clip_is_matted_upright_and_keeps_its_rotation(
    tmp_path: Path, models_dir: Path
) -> None:
    """Phones store portrait video as landscape frames plus a display rotation (here 90)."""
    upright, placement = frame_with_person(360, 640)
    src = tmp_path / "phone.mp4"
    with av.open(str(src), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 640, 360, "yuv420p"
        video.set_display_rotation(90)  # counter-clockwise: the player turns it upright
        for index in range(5):
            stored = np.ascontiguousarray(np.rot90(upright, -1))
            picture = av.VideoFrame.from_ndarray(stored, format="rgb24")
            picture.pts, picture.time_base = index, Fraction(1, FPS)
            container.mux(video.encode(picture))
        container.mux(video.encode(None))

    result = _roto(src, tmp_path / "out", models_dir, format="prores")

    assert result.metadata["model"] == "selfie_segmentation.tflite"  # upright it is portrait
    person, wall = place(person_mask(), 360, 640, placement), place(background_mask(), 360, 640, placement)
    for output in result.files:
        with av.open(str(output.path)) as container:  # FFmpeg's own decoder reads the tag
            assert next(container.decode(video=0)).rotation == 90, output.role
        alpha = np.rot90(_decode(output.path)[0][-1], 1)  # as the player shows it
        assert alpha[person].mean() / 255 > 0.9, output.role
        assert alpha[wall].mean() / 255 < 0.1, output.role
