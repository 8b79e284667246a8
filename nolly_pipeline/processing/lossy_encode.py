"""Lossy output of audio clean: encode, decode as a player does, correct, keep the best.

Lossy encoders shift what the limiter made: an MP3 low-pass takes loudness, ringing over
the limited peaks adds true peak. So each encode is decoded and re-measured, and another
follows, with a corrected gain and ceiling, only when that can change the outcome
(:func:`encode_lossy`). The encoding itself is the caller's (``audio_clean``'s pass 2);
this module decides what to ask of it and judges what came out. No Dagster here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from nolly_pipeline.processing.audio_stream import FloatFrames, float_blocks, scratch_samples
from nolly_pipeline.processing.gain_plan import (
    LOSSY_AIM_LU,
    LOUDNESS_TOLERANCE_LU,
    PEAK_SAFETY_DB,
    GainPlan,
    Measured,
    ceiling_window,
    overshoot_db,
    solve_gain,
)
from nolly_pipeline.processing.loudness import LoudnessMeter, WindowPeaks
from nolly_pipeline.processing.media import open_input

LOSSY_CODECS = {"aac", "ac3", "eac3", "libmp3lame", "libopus", "libvorbis", "mp2"}
_MIN_BIT_RATE = 64_000  # per channel (up to two): speech-grade MP3/AAC
# Lossy encoders ring over the limited peaks, more at lower rates; the first encode leaves
# this much headroom, by bit rate per channel. Measured on espeak speech after limiting:
# MP3 at 64 kbit/s rose 1.5-3.4 dB, AAC at ~69 kbit/s 1.5-1.7 dB, 128 kbit/s about 1 dB.
_MARGIN_DB = ((_MIN_BIT_RATE, 2.0), (128_000, 1.0))
# Lossy output this close to the target (and under the limit) is kept: a re-encode would
# risk the codec's ringing for little.
_GOOD_ENOUGH_LU = 0.5
# Encode, decode, correct (peak and loudness). A fourth encode changed 2 of the 36
# lossy-loudness benchmark cases by at most 0.2 LU and no case's verdict, and it cost a
# second and a half on a 60 s MP3 (PyAV's LAME encodes at ~60x real time here).
_MAX_ENCODES = 3
# An overshoot lowers the ceiling by its full amount in the windows where it happened
# (``gain_plan.overshoot_db``) and everywhere by this share of it: codec ringing near the
# ceiling moves between encodes, so local corrections alone chase it. Measured on 36 lossy
# cases (speech and tones, mp3 at 64/128 kbit/s and AAC, four targets): 24 in range, against
# 20 for the whole overshoot taken off the global ceiling and 22 for local corrections alone.
_GLOBAL_SHARE = 0.5

# Pass 2 into one file: (path, plan, ceiling dB, per-window ceiling reduction dB) -> the
# loudness of the limited signal as it went to the encoder.
Encode = Callable[[Path, GainPlan, float, np.ndarray], float]


def output_bit_rate(source_bit_rate: int | None, channels: int) -> int:
    """The source's rate, as its editor chose it, but never under the floor.

    A stream's figure is often an average (near nothing for a quiet AAC track).
    """
    return max(source_bit_rate or 0, _MIN_BIT_RATE * min(channels, 2))


def ringing_margin_db(bit_rate: int, channels: int) -> float:
    """Headroom the first encode leaves under the limit for the codec's ringing."""
    rates, margins = zip(*_MARGIN_DB)
    return float(np.interp(bit_rate / channels, rates, margins))


@dataclass(frozen=True)
class Encoded:
    """One encode of lossy output, as a player decodes it."""

    path: Path
    loudness: float
    true_peak_db: float
    clipped: bool

    def rank(self, limit_db: float, target: float | None) -> tuple[bool, float, float]:
        """Sort key, best first: under the peak limit, then least overshoot, then least miss.

        ``target`` is None when the audio is too quiet to normalise: only the peak counts.
        """
        overshoot = self.true_peak_db - limit_db
        miss = abs(target - self.loudness) if target is not None else 0.0
        return overshoot > 0, max(overshoot, 0.0), miss


def encode_lossy(
    encode: Encode, dst: Path, scratch: BinaryIO, measured: Measured, rate: int,
    target_lufs: float, limit_db: float, bit_rate: int,
) -> Encoded:
    """Encode ``scratch`` to ``dst`` with the gain that meets the target under the limit.

    The first encode leaves room for the codec's ringing at ``bit_rate``
    (:func:`ringing_margin_db`).

    Each encode goes to a hidden file beside ``dst`` and is decoded and re-measured. It is
    re-encoded only when that can change the outcome: the peak overshot, or the loudness
    missed although the dry runs had hit the target (the target moves by the encoder's
    shift), or it came out too quiet well under the limit (the codec took peaks off, as an
    MP3 low-pass does to clicks: the ceiling goes up, never past the limit). Otherwise,
    when the dry runs were already short, another encode would land in the same place. An
    overshoot lowers the ceiling by its full amount where it happened and by
    ``_GLOBAL_SHARE`` of it everywhere else. Codec ringing on heavily limited audio varies
    from one encode to the next, so a correction can come out worse: the best encode
    (:meth:`Encoded.rank`) is the one kept, and if none is under the limit by the last
    try, that one leaves room for the largest rise any encode put on its ceiling.
    """
    attempts = [dst.with_name(f".{dst.stem}.{n}{dst.suffix}") for n in range(_MAX_ENCODES)]
    try:
        margin = ringing_margin_db(bit_rate, measured.channels)
        best = _encode_attempts(encode, attempts, scratch, measured, rate, target_lufs, limit_db, margin)
        best.path.replace(dst)
    finally:  # a cancelled job or a failed encode must not leave hidden files behind
        for path in attempts:
            path.unlink(missing_ok=True)
    return Encoded(dst, best.loudness, best.true_peak_db, best.clipped)


def _encode_attempts(
    encode: Encode, attempts: list[Path], scratch: BinaryIO, measured: Measured, rate: int,
    target_lufs: float, limit: float, margin: float,
) -> Encoded:
    """Encode to ``attempts`` in turn (see :func:`encode_lossy`) and return the best one."""
    ceiling = limit - margin
    window = ceiling_window(rate)
    lowered = np.zeros(-(-scratch_samples(scratch, measured.channels) // window))
    target = target_lufs
    goal = target_lufs if measured.normalisable else None
    plan: GainPlan | None = None
    best: Encoded | None = None
    rise = 0.0  # the most any encode has put on top of its ceiling
    for attempt, path in enumerate(attempts):
        if attempt == len(attempts) - 1 and best is not None and best.true_peak_db > limit:
            ceiling = min(ceiling, limit - rise - PEAK_SAFETY_DB)  # last try: the peak first
        plan = solve_gain(scratch, measured, rate, target, ceiling, lowered, plan, LOSSY_AIM_LU)
        sent_lufs = encode(path, plan, ceiling, lowered)
        output_lufs, output_peak, window_peaks = measure_file(path, window, limit, measured.start)
        rise = max(rise, output_peak - ceiling)
        encoded = Encoded(path, output_lufs, output_peak, plan.clip_db is not None)
        if best is None or encoded.rank(limit, goal) < best.rank(limit, goal):
            best, encoded = encoded, best
        if encoded is not None:
            encoded.path.unlink()
        miss = goal - output_lufs if goal is not None else 0.0
        # Too quiet with room under the limit: a higher ceiling lets the limiter give more.
        room = miss > 0 and output_peak < limit - LOUDNESS_TOLERANCE_LU and ceiling < limit
        loudness_fixable = abs(plan.miss) <= LOUDNESS_TOLERANCE_LU or room
        if output_peak <= limit and (abs(miss) <= _GOOD_ENOUGH_LU or not loudness_fixable):
            break
        target = target_lufs + (sent_lufs - output_lufs)
        lowered += overshoot_db(window_peaks, limit, len(lowered))
        # Overshoot lowers the ceiling; room left under the limit raises it (never past it).
        ceiling = min(ceiling - _GLOBAL_SHARE * (output_peak - limit), limit)
    assert best is not None  # at least one attempt ran, or an exception left
    return best


def measure_file(path: Path, window: int, limit_db: float,
                 start: float) -> tuple[float, float, np.ndarray]:
    """Loudness and true peak of an encoded file's first audio track, as a player decodes it.

    Also the true peak per ``window`` samples where it reaches ``limit_db`` (0 elsewhere),
    counted from ``start`` (seconds, where the audio was written): when audio starts late
    in MP4/MOV, the decoder also returns the encoder's priming samples before it.
    """
    with open_input(path) as container:
        stream = container.streams.audio[0]
        channels = stream.codec_context.channels
        rate = stream.codec_context.sample_rate
        decoded = FloatFrames(container, stream, rate)
        loudness = LoudnessMeter(rate, channels)
        peaks: WindowPeaks | None = None
        for block in float_blocks(decoded, rate):
            loudness.update(block)
            if peaks is None:  # the decoder's first timestamp says how many samples lead
                lead = max(round((start - (decoded.start or 0.0)) * rate), 0)
                peaks = WindowPeaks(channels, window, limit_db, skip=lead)
            peaks.update(block)
    if peaks is None:  # nothing decoded
        peaks = WindowPeaks(channels, window, limit_db)
    windows = peaks.finish()
    return loudness.integrated(), peaks.peak_db(), windows
