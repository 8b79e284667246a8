"""Loudness and true peak of lossy audio-clean output, on a matrix of material and targets.

Run: ``make bench`` (or ``.venv/bin/python benchmarks/audio_loudness.py``). Each case
encodes a test signal with the reference ffmpeg CLI, cleans it with the default denoiser,
and judges the decoded output with independent meters (pyloudnorm for BS.1770 loudness,
scipy's 4x ``resample_poly`` for true peak): in range means within ±1 LU of the target
and at or under the true-peak limit. Material: espeak-ng speech in pink noise (10 and
25 dB SNR; espeak peaks ~20 dB over its loudness, harder than most recorded dialogue)
and tone bursts with a clap. Writes its table to
``docs/benchmarks.md`` between the ``audio-loudness`` markers.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyloudnorm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._doc import write_section  # noqa: E402
from benchmarks._speech import looped_speech  # noqa: E402
from nolly_pipeline.processing.audio_clean import AudioCleanSettings, audio_clean  # noqa: E402
from nolly_pipeline_tests.processing.reference import (  # noqa: E402
    encode_audio,
    mix_at_snr,
    pink_noise,
    read_audio,
    tone_bursts,
    true_peak_db,
)

RATE = 48_000
TARGETS = ((-16.0, -1.5), (-18.0, -2.0), (-23.0, -1.0), (-14.0, -1.0))  # (LUFS, dBTP)
ENCODINGS = (("mp3", ".mp3", ()), ("mp3 128k", ".mp3", ("-b:a", "128k")), ("aac", ".m4a", ()))


@dataclass
class Case:
    material: str
    encoding: str
    target: tuple[float, float]
    loudness: float
    true_peak: float
    seconds: float

    @property
    def in_range(self) -> bool:
        return abs(self.loudness - self.target[0]) <= 1.0 and self.true_peak <= self.target[1]


def _materials(tmp: Path) -> dict[str, np.ndarray]:
    speech = looped_speech(tmp, 40)
    tones = tone_bursts(20, RATE)
    return {
        "speech, 10 dB SNR": mix_at_snr(speech, pink_noise(len(speech), np.random.default_rng(0)), 10.0),
        "speech, 25 dB SNR": mix_at_snr(speech, pink_noise(len(speech), np.random.default_rng(1)), 25.0),
        "tone bursts": tones + 0.003 * np.random.default_rng(3).standard_normal(len(tones)),
    }


def _run(tmp: Path) -> list[Case]:
    cases = []
    for name, signal in _materials(tmp).items():
        for encoding, suffix, options in ENCODINGS:
            src = encode_audio(tmp / f"source{suffix}", signal[None, :], RATE, *options)
            for lufs, peak in TARGETS:
                start = time.perf_counter()
                result = audio_clean(src, tmp / "out", AudioCleanSettings(loudness_lufs=lufs, true_peak_db=peak))
                seconds = time.perf_counter() - start
                samples, rate = read_audio(result.files[0].path)
                loudness = pyloudnorm.Meter(rate).integrated_loudness(samples.T)
                true_peak = true_peak_db(samples)
                cases.append(Case(name, encoding, (lufs, peak), loudness, true_peak, seconds))
    return cases


def _table(cases: list[Case]) -> str:
    header = "| material | encoding | " + " | ".join(f"{lufs:g} LUFS / {peak:g} dBTP" for lufs, peak in TARGETS)
    lines = [header + " |", "|---|---|" + "---|" * len(TARGETS)]
    for material in dict.fromkeys(c.material for c in cases):
        for encoding, _, _ in ENCODINGS:
            row = [c for c in cases if c.material == material and c.encoding == encoding]
            cells = [f"{'ok' if c.in_range else 'MISS'} {c.loudness:.1f} / {c.true_peak:.1f}" for c in row]
            lines.append(f"| {material} | {encoding} | " + " | ".join(cells) + " |")
    speech = [c for c in cases if c.material.startswith("speech")]
    return "\n".join(lines) + (
        f"\n\nIn range: {sum(c.in_range for c in cases)} of {len(cases)} cases; speech "
        f"{sum(c.in_range for c in speech)} of {len(speech)}. Mean time per case "
        f"{np.mean([c.seconds for c in cases]):.2f} s (40 s speech, 20 s tones).\n")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        table = _table(_run(Path(tmp)))
    print(table)
    write_section("audio-loudness", "## Lossy audio loudness (`benchmarks/audio_loudness.py`)\n\n"
                  "Decoded output judged by pyloudnorm and 4x true peak: loudness / true peak, "
                  "in range = within ±1 LU and at or under the limit.\n\n" + table)


if __name__ == "__main__":
    main()
