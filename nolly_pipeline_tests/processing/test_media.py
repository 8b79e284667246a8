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


def _wav(path, seconds: float, rate: int = 48000, channels: int = 2):
    import wave

    import numpy as np

    samples = (np.sin(np.arange(int(seconds * rate)) * 0.05) * 8000).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.repeat(samples, channels).tobytes())
    return path


@pytest.mark.parametrize("name", ["take.wav", "take.bin"])  # told by content, not by name
def test_a_wav_opened_with_a_small_probe_reads_as_with_ffmpegs_default(tmp_path, name):
    """WAV files open with a small probe size (media._open_options); a probe must report what
    FFmpeg's default open reports, to the sample."""
    import av

    from nolly_pipeline.processing.media import _WAV_PROBE_SIZE, _open_options

    path = _wav(tmp_path / name, seconds=20.0, rate=44100)
    assert _open_options(path) == {"probesize": str(_WAV_PROBE_SIZE)}
    info = probe(path)
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        expected = (float(stream.duration * stream.time_base), stream.codec_context.sample_rate,
                    stream.codec_context.channels, stream.codec_context.codec.canonical_name)
    assert (info.duration, info.sample_rate, info.channels, info.audio_codec) == expected
    assert expected[:3] == (20.0, 44100, 2)


def test_other_formats_open_with_ffmpegs_default_probe(video_clip, tmp_path):
    """Raw AAC and MP3 estimate their duration from the bytes probed: only WAV is opened small."""
    from nolly_pipeline.processing.media import _open_options

    (tmp_path / "riff.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI LIST")
    assert _open_options(video_clip) == {}
    assert _open_options(tmp_path / "riff.avi") == {}
    assert _open_options(tmp_path / "missing.wav") == {}
