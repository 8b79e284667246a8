"""Reference tools the processing tests and benchmarks compare against.

The ``ffmpeg`` CLI comes from ``imageio-ffmpeg``'s bundled static build, so a fresh machine
needs no system package; it ships ``lut3d``, ``libx264`` and ``ebur128``. Speech comes from
``espeak-ng`` (Debian's package, which ``make test`` installs).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import numpy as np
from scipy.signal import lfilter, resample_poly


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args: str) -> None:
    """Run the reference ffmpeg CLI quietly; raise with its stderr on failure."""
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True, capture_output=True)


def video_frames(path: Path) -> list[np.ndarray]:
    """Decode every frame as RGB (fine for the short clips tests use)."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def packet_payloads(path: Path, kind: str) -> list[bytes]:
    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        return [bytes(p) for p in container.demux(stream) if p.size]


def encode_audio(path: Path, samples: np.ndarray, rate: int, *options: str) -> Path:
    """Float samples ``(channels, n)`` to ``path`` via the reference CLI (``options``: codec etc.)."""
    raw = path.with_suffix(".f32")
    np.ascontiguousarray(samples.T, dtype="<f4").tofile(raw)
    ffmpeg("-f", "f32le", "-ar", str(rate), "-ac", str(samples.shape[0]), "-i", str(raw), *options, str(path))
    return path


def true_peak_db(samples: np.ndarray) -> float:
    """BS.1770 true peak of ``(channels, n)`` by scipy's 4x polyphase resampling: a reference
    independent of the product's own meter."""
    return float(20 * np.log10(np.abs(resample_poly(samples, 4, 1, axis=1)).max()))


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """All samples as float (channels, n) plus the sample rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        resampler = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=rate)
        chunks = [
            r.to_ndarray() for f in container.decode(stream) for r in resampler.resample(f)
        ] + [r.to_ndarray() for r in resampler.resample(None)]
    return np.concatenate(chunks, axis=1).astype(np.float64), rate


SPEECH_TEXT = (
    "The quick brown fox jumps over the lazy dog. Colour grading and audio cleaning are "
    "part of the post production pipeline. We measure the signal to noise ratio before and "
    "after denoising, and it should improve a lot."
)


def espeak_speech(espeak: str, wav: Path, text: str = SPEECH_TEXT) -> np.ndarray:
    """English speech from espeak-ng at 48 kHz, mono float peaking near 0.5."""
    subprocess.run([espeak, "-w", str(wav), text], check=True, capture_output=True)
    speech, rate = read_audio(wav)
    return resample_poly(speech[0], 48_000, rate) * 0.5


def tone_bursts(seconds: float, rate: int) -> np.ndarray:
    """Speech-like bursts (180 Hz with a 900 Hz wobble) with pauses, and a clap at 1 s.

    Peaky on purpose: the clap makes the true-peak limiter work. Mono, no noise added.
    """
    t = np.arange(int(seconds * rate)) / rate
    envelope = (np.sin(2 * np.pi * 1.3 * t) > 0.2) * 0.2
    voice = envelope * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 900 * t))
    voice[rate : rate + 200] += 0.9
    return voice


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """-3 dB/octave noise (Paul Kellet's filter on white noise)."""
    b = [0.049922035, -0.095993537, 0.050612699, -0.004408786]
    a = [1, -2.494956002, 2.017265875, -0.522189400]
    return lfilter(b, a, rng.standard_normal(n))


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    noise = noise * np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return clean + noise
