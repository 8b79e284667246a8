"""Side-by-side speed and memory figures for local processing; writes docs/benchmarks.md.

Run: ``make bench``. Uses the reference ffmpeg CLI from imageio-ffmpeg and espeak-ng speech
(Debian's package, installed by ``make bench``), so it needs no network.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._doc import write_section  # noqa: E402
from benchmarks._rss import peak_rss_kib  # noqa: E402
from benchmarks._speech import looped_speech  # noqa: E402
from nolly_pipeline.processing.audio_clean import AudioCleanSettings, audio_clean  # noqa: E402
from nolly_pipeline.processing.color_grade import ColorGradeSettings, color_grade  # noqa: E402
from nolly_pipeline_tests.processing.reference import (  # noqa: E402
    encode_audio,
    ffmpeg,
    ffmpeg_exe,
    mix_at_snr,
    pink_noise,
)

def _clip(path: Path, seconds: int, size: str) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=s={size}:r=30:d={seconds}", "-f", "lavfi",
           "-i", f"sine=f=440:d={seconds}:sample_rate=48000", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path))
    return path


def _rss_child(src: Path, out: Path) -> int:
    return peak_rss_kib("from nolly_pipeline.processing.color_grade import ColorGradeSettings,color_grade",
                        f"color_grade(Path({str(src)!r}),Path({str(out)!r}),ColorGradeSettings(preset='warm'))")


def _roto_row(clip: Path, tmp: Path) -> tuple[str, str, str]:
    """Roto is another helper's module; report why it did not run instead of failing."""
    name = "roto 10 s 1080p30 end to end"
    try:
        from nolly_pipeline.processing.models import selfie_model_path
        from nolly_pipeline.processing.roto import RotoSettings, roto
    except ImportError as exc:
        return name, "not run", f"roto module not available yet ({exc.name})"
    try:
        model = selfie_model_path()
        start = time.perf_counter()
        roto(clip, tmp / "roto", RotoSettings(), model_path=model, progress=lambda d, t: None)
    except Exception as exc:  # noqa: BLE001 - any failure becomes a note in the table
        return name, "not run", str(exc).replace("|", "/")
    took = time.perf_counter() - start
    return name, f"{took:.2f} s", f"{300 / took:.1f} fps"


def _audio_rows(tmp: Path) -> list[tuple[str, str, str]]:
    """60 s of espeak-ng speech in pink noise at 5 dB SNR, default settings, WAV and MP3.

    MP3 output is decoded, re-measured and re-encoded when the codec's ringing broke the
    true-peak limit, so it costs more than WAV. Median of 3 runs: single runs on this shared
    machine ranged 5.6-7.0 s for the same MP3 within minutes.
    """
    rate = 48_000
    speech = looped_speech(tmp, 60)
    noisy = mix_at_snr(speech, pink_noise(len(speech), np.random.default_rng(0)), 5.0)
    rows = []
    for suffix, codec in ((".wav", "pcm_s16le"), (".mp3", "libmp3lame")):
        src = encode_audio(tmp / f"speech{suffix}", noisy[None, :], rate, "-c:a", codec)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            result = audio_clean(src, tmp / "audio", AudioCleanSettings())
            times.append(time.perf_counter() - start)
        took = float(np.median(times))
        rows.append((f"audio_clean 60 s speech + pink noise at 5 dB, mono 48 kHz {suffix[1:].upper()} "
                     f"({AudioCleanSettings().denoise}, -16 LUFS, -1.5 dBTP)", f"{took:.2f} s",
                     f"{60 / took:.1f}x real time (goal >= 10x); "
                     f"{result.metadata['output_lufs']} LUFS, {result.metadata['output_true_peak_db']} dBTP"))
    return rows


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = _clip(tmp / "clip1080.mp4", 10, "1920x1080")
        start = time.perf_counter()
        result = color_grade(clip, tmp / "ours", ColorGradeSettings(preset="teal-orange"))
        ours = time.perf_counter() - start
        lut = result.files[1].path
        start = time.perf_counter()
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(clip), "-vf",
                        f"lut3d=file={lut},format=yuv420p", "-c:v", "libx264", "-crf", "18",
                        "-preset", "veryfast", "-c:a", "copy", str(tmp / "cli.mp4")], check=True)
        cli = time.perf_counter() - start
        rows.append(("color_grade 10 s 1080p30 (300 frames)", f"{ours:.2f} s ({300 / ours:.1f} fps)",
                     f"ffmpeg CLI {cli:.2f} s; speed ratio {cli / ours:.2f}x (goal >= 0.9)"))

        rows.extend(_audio_rows(tmp))
        rows.append(_roto_row(clip, tmp))

        short = _clip(tmp / "short.mp4", 3, "640x360")
        long = _clip(tmp / "long.mp4", 30, "640x360")
        rss_short, rss_long = _rss_child(short, tmp / "rs"), _rss_child(long, tmp / "rl")
        rows.append(("color_grade peak RSS 3 s vs 30 s 360p", f"{rss_short // 1024} MiB vs {rss_long // 1024} MiB",
                     f"ratio {rss_long / rss_short:.2f} (goal <= 1.3)"))

    table = "| run | time / size | result |\n| --- | --- | --- |\n" + "".join(
        f"| {a} | {b} | {c} |\n" for a, b, c in rows)
    print(table)
    write_section("processing-benchmarks", f"## Local processing (2 cores)\n\n{table}")


if __name__ == "__main__":
    main()
