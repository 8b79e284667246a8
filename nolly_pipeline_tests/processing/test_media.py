from fractions import Fraction

import pytest

from nolly_pipeline.errors import InputError
from nolly_pipeline.processing.media import probe


def test_probe_video(video_clip):
    info = probe(video_clip)
    assert info.kind == "video"
    assert (info.width, info.height, info.fps, info.frame_count) == (320, 240, Fraction(25), 50)
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.video_codec == "h264"
    assert (info.has_audio, info.sample_rate, info.channels, info.audio_codec) == (True, 48000, 2, "aac")


def test_probe_still(still_png, still_jpg):
    png, jpg = probe(still_png), probe(still_jpg)
    assert (png.kind, png.video_codec, png.frame_count, png.width) == ("image", "png", 1, 160)
    assert (jpg.kind, jpg.video_codec) == ("image", "mjpeg")


@pytest.mark.parametrize("name", ["garbage.mp4", "truncated.mp4", "empty.wav"])
def test_probe_rejects_broken_files(corrupt_files, name):
    with pytest.raises(InputError, match=rf"^could not decode {name}: ") as exc:
        probe(corrupt_files[name])
    assert "Traceback" not in str(exc.value) and str(corrupt_files[name].parent) not in str(exc.value)
