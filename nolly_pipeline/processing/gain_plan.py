"""The gain, soft clipper and true-peak limiter of audio clean-up's pass 2, planned on the scratch.

Pass 1 (``audio_clean.py``) leaves the cleaned signal as raw float32 in a scratch file and
what it measured there (:class:`Measured`). Here the gain that meets the loudness target
under the true-peak ceiling is found by dry runs over that file (limiter and meter, no
encoding), and :func:`limited` applies the plan block by block for the encode. Lossy
output brings its own per-window ceiling corrections (``lowered``, see
:func:`overshoot_db`). No Dagster and no codecs here: numpy and the meters only.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

import numpy as np
from scipy.ndimage import maximum_filter1d

from nolly_pipeline.processing.audio_stream import BLOCK_SECONDS, scratch_blocks, scratch_samples
from nolly_pipeline.processing.loudness import (
    PEAK_DELAY,
    LoudnessMeter,
    TruePeakLimiter,
    soft_clip,
    subblock_samples,
)
from nolly_pipeline.processing.peak_track import PeakTrack

# Aim this far under the true-peak limit: meters differ slightly, PCM rounds to 16 bits.
PEAK_SAFETY_DB = 0.1
LOUDNESS_TOLERANCE_LU = 0.3  # the gain search aims within half of this
# Before a lossy encode the search aims closer: the codec moves the loudness by up to about
# half a LU of its own, and a first encode more than lossy_encode's _GOOD_ENOUGH_LU off is
# encoded again. A 60 s MP3 aimed 0.15 LU quiet landed 0.57 LU quiet: a second encode and
# decode (2.3 s) to spare one dry run (0.2 s).
LOSSY_AIM_LU = 0.05
# Lossy output: where the decoded file overshoots the limit, the next encode lowers the
# ceiling by the overshoot in windows of this length (and one either side: decoders align
# to a few samples).
_CEILING_WINDOW_S = 0.02
_MAX_GAIN_STEPS = 4  # dry runs per gain search (limiter alone, then with the soft clipper)
# Output LU per dB of gain below which, still too quiet, more gain is not worth trying: the
# limiter takes back nearly all of it (or the relative gate lets quieter blocks in).
_MIN_SLOPE = 0.2
# The soft clipper takes at most this much off the loudest peak; the limiter does the rest.
# Clipping deeper would meet the loudness target on paper by squaring off the audio (a
# burst left by the denoiser needed ~30 dB); past this, the true-peak ceiling and clean
# audio win over the target, and output_lufs shows how far short it landed.
_MAX_CLIP_DRIVE_DB = 6.0
# Short of the target by more than this with the limiter alone, try the soft clipper; less
# is within the ±1 LU promise with room for the encoder, and not worth clipping speech: with
# the clipper ahead of the limiter on every file (up to 6 dB off its loudest peak), DNSMOS
# over the benchmark's dialogue fell from 1.101x to 1.098x NSNet2's (docs/benchmarks.md,
# sixth session).
_CLIP_WHEN_SHORT_LU = 0.5
_MAX_LIMITING_DB = 20.0  # most gain reduction asked of the limiter on the loudest peak
# A dry run over this much audio or more runs as two halves on two threads (the limiter's
# and the meter's numpy and scipy calls release the GIL): 60 s took 0.36 s for two dry runs
# at once where one after the other took 0.52 s. The second half starts _WARM_UP_S early
# and the first reads _OVERLAP_S past its end, so each limiter and meter sees what it would
# in one run: the limiter's release forgets its deepest cut (20 dB + the clipper's 6 dB, at
# 870 dB/s) within 0.03 s, the meter's K-weighting within milliseconds.
_SPLIT_FROM_S = 8.0
_WARM_UP_S = 1.0
_OVERLAP_S = 0.05  # more than the limiter's look-ahead and the oversampler's delay


@dataclass
class Measured:
    """What pass 1 learnt about the cleaned signal (at the output rate)."""

    loudness: float  # LUFS
    true_peak_db: float
    start: float  # seconds: the audio's start time, kept to preserve A/V offset
    channels: int
    peaks: PeakTrack | None = None  # every sample's true peak, for the limiters that follow

    @property
    def normalisable(self) -> bool:
        """Near-silence has no loudness to match: it keeps its level."""
        return self.loudness > -60.0


@dataclass(frozen=True)
class GainPlan:
    """What pass 2 applies, and how close the dry runs said it lands."""

    target: float  # LUFS the dry runs aimed at
    gain_db: float
    clip_db: float | None  # soft clipper's ceiling; None: the limiter alone
    miss: float  # LU, target minus the dry run's loudness (positive: too quiet)


def ceiling_window(rate: int) -> int:
    """Samples per window of the per-window ceiling (``_CEILING_WINDOW_S``)."""
    return max(round(_CEILING_WINDOW_S * rate), 1)


def overshoot_db(window_peaks: np.ndarray, limit_db: float, windows: int) -> np.ndarray:
    """Per window, how far (plus safety) the decoded peak went over ``limit_db``; 0 elsewhere.

    Spread to the neighbouring windows, so a peak the decoder shifted by a few samples
    across a window edge is still covered.
    """
    peaks = np.zeros(windows)
    peaks[: min(windows, len(window_peaks))] = window_peaks[:windows]
    over = np.zeros(windows)
    hot = peaks > 10 ** (limit_db / 20)
    over[hot] = 20 * np.log10(peaks[hot]) - limit_db + PEAK_SAFETY_DB
    return maximum_filter1d(over, 3, mode="constant")


def solve_gain(scratch: BinaryIO, measured: Measured, rate: int, target: float,
               ceiling_db: float, lowered: np.ndarray | None,
               previous: GainPlan | None, aim: float = LOUDNESS_TOLERANCE_LU / 2) -> GainPlan:
    """Gain (dB), and soft clipper ceiling if needed, whose output measures ``target`` LUFS.

    Without limiting the answer is exact: target minus measured loudness. Once the limiter
    works, loudness grows more slowly than gain, and not even monotonically (limiting a
    transient that dominates the gated blocks lets quieter blocks past the relative gate),
    so the gain is found by secant steps on dry runs (limiter and meter, no encoding).
    Material whose peak-to-loudness ratio the limiter cannot close (e.g. tones RNNoise has
    cut down to onset bursts) stays short of the target however much gain it gets; only
    when it is short by more than ``_CLIP_WHEN_SHORT_LU`` is the search repeated with
    :func:`soft_clip` ahead of the limiter, which trades the bursts' crest factor for
    loudness. Its ceiling sits ``_MAX_CLIP_DRIVE_DB`` under the loudest peak (never under
    the limiter's), so it shaves at most that much and the limiter does the rest.

    ``lowered`` is the per-window ceiling reduction of lossy output (see :func:`limited`).
    ``previous`` (the plan of the last encode of lossy output) warm-starts the search in
    the mode it ended in, so a re-encode costs one or two dry runs rather than a full search.
    The search stops within ``aim`` LU of the target (lossy output: :data:`LOSSY_AIM_LU`).
    """
    if not measured.normalisable:
        return GainPlan(target, 0.0, None, 0.0)
    gain = target - measured.loudness
    lowest = ceiling_db - (np.max(lowered, initial=0.0) if lowered is not None else 0.0)
    if measured.true_peak_db + gain <= lowest:
        return GainPlan(target, gain, None, 0.0)

    def clip_at(gain_db: float) -> float:
        return max(ceiling_db, measured.true_peak_db + gain_db - _MAX_CLIP_DRIVE_DB)

    def dry_run(gain_db: float, clip_db: float | None) -> float:
        return dry_run_loudness(scratch, measured.channels, rate, gain_db, ceiling_db, clip_db, lowered,
                                measured.peaks)

    # Never more limiting than this on the loudest peak: past it the limiter only pumps the
    # noise floor up (a run of noise bursts once asked for 45 dB).
    most = ceiling_db - measured.true_peak_db + _MAX_LIMITING_DB

    def clipped(start: float) -> GainPlan:
        found, miss = _search_gain(lambda g: dry_run(g, clip_at(g)), min(start, most), target, most, aim)
        return GainPlan(target, found, clip_at(found), miss)

    if previous is not None:
        gain = max(gain, previous.gain_db + target - previous.target)
        if previous.clip_db is not None:
            return clipped(gain)
    found, miss = _search_gain(lambda g: dry_run(g, None), min(gain, most), target, most, aim)
    limiter_only = GainPlan(target, found, None, miss)
    if miss <= _CLIP_WHEN_SHORT_LU:
        return limiter_only
    with_clipper = clipped(found)
    return with_clipper if abs(with_clipper.miss) < abs(miss) else limiter_only


def _search_gain(loudness_at: Callable[[float], float], gain: float, target: float,
                 most: float, aim: float) -> tuple[float, float]:
    """Secant search from ``gain`` (at most ``most``) for where ``loudness_at`` reads ``target``
    within ``aim`` LU.

    Returns the best gain seen and its miss (target minus loudness, so positive is too
    quiet). Gives up early once more gain stops buying loudness, which is the sign that
    the soft clipper is needed (or, with it, that its bounded drive is spent), or once it
    is at ``most`` and still too quiet.
    """
    best, best_miss = gain, float("inf")
    previous: tuple[float, float] | None = None
    slope = 1.0  # output LU per dB of gain
    for _ in range(_MAX_GAIN_STEPS):
        lufs = loudness_at(gain)
        miss = target - lufs
        if abs(miss) < abs(best_miss):
            best, best_miss = gain, miss
        if abs(miss) <= aim:
            break
        if previous is not None and gain != previous[0]:
            slope = (lufs - previous[1]) / (gain - previous[0])
            if miss > 0 and slope < _MIN_SLOPE:
                break
            slope = min(max(slope, _MIN_SLOPE), 1.0)
        if miss > 0 and gain >= most:
            break
        previous = (gain, lufs)
        gain = min(gain + miss / slope, most)
    return best, best_miss


def dry_run_loudness(scratch: BinaryIO, channels: int, rate: int, gain_db: float, ceiling_db: float,
                     clip_db: float | None, lowered: np.ndarray | None,
                     peaks: PeakTrack | None = None) -> float:
    """Integrated loudness of the scratch through :func:`limited`: what pass 2 would send.

    Long audio is metered as two halves at once (see ``_SPLIT_FROM_S``), cut on the meter's
    100 ms grid so that together they count exactly the blocks one meter would.
    """
    total = scratch_samples(scratch, channels)
    step = subblock_samples(rate)
    cuts = [0, total // 2 // step * step, total] if total >= _SPLIT_FROM_S * rate else [0, total]

    def part(index: int) -> LoudnessMeter:
        return _part_meter(scratch, channels, rate, cuts[index], cuts[index + 1], total, gain_db,
                           ceiling_db, clip_db, lowered, peaks)

    if len(cuts) == 2:
        return part(0).integrated()
    with ThreadPoolExecutor(max_workers=len(cuts) - 1, thread_name_prefix="dry-run") as pool:
        first, *others = pool.map(part, range(len(cuts) - 1))
    for meter in others:
        first.add(meter)
    return first.integrated()


def _part_meter(scratch: BinaryIO, channels: int, rate: int, start: int, stop: int, total: int,
                gain_db: float, ceiling_db: float, clip_db: float | None,
                lowered: np.ndarray | None, peaks: PeakTrack | None) -> LoudnessMeter:
    """A meter of output samples ``start``..``stop``, its limiter and meter warmed up on the
    audio before ``start`` (whose blocks it then forgets) and reading on past ``stop``."""
    step = subblock_samples(rate)
    begin = max(start - round(_WARM_UP_S * rate) // step * step, 0)  # on the meter's grid
    end = total if stop == total else min(stop + round(_OVERLAP_S * rate), total)
    blocks = scratch_blocks(scratch, channels, int(BLOCK_SECONDS * rate), begin, end)
    meter = LoudnessMeter(rate, channels)
    position = begin
    for block in limited(blocks, gain_db, ceiling_db, rate, channels, clip_db, lowered, begin, peaks):
        if position < start < position + block.shape[1]:
            meter.update(block[:, : start - position])
            block, position = block[:, start - position :], start
        if position == start and start > begin:
            meter.forget_blocks()
        if position < stop:
            meter.update(block[:, : stop - position])
        position += block.shape[1]
        if position >= stop:
            break
    return meter


def limited(blocks: Iterator[np.ndarray], gain_db: float, ceiling_db: float, rate: int,
            channels: int, clip_db: float | None,
            lowered: np.ndarray | None, start: int = 0,
            peaks: PeakTrack | None = None) -> Iterator[np.ndarray]:
    """Apply the gain, the soft clipper (if given its ceiling), then the true-peak limiter.

    ``lowered`` (dB per ``_CEILING_WINDOW_S`` window) brings the limiter's ceiling down
    where an earlier encode overshot. The limiter's latency is trimmed, so output sample
    *n* lines up with input sample *n*; ``blocks`` begin at sample ``start`` of the stream.
    ``peaks``, the stream's true peaks from pass 1, spare the limiter its oversampling
    where no soft clipper reshapes them.
    """
    gain = 10 ** (gain_db / 20)
    limiter = TruePeakLimiter(rate, channels, ceiling_db)
    to_skip = limiter.latency
    window = ceiling_window(rate)
    local = lowered is not None and bool(lowered.any())
    stored = peaks if clip_db is None else None
    position = start

    def limit(block: np.ndarray) -> np.ndarray:
        nonlocal position
        # The limiter judges the peak of input sample n - PEAK_DELAY as it takes sample n.
        count = block.shape[1]
        found = None if stored is None else gain * stored.read(position, count)
        ceilings = None
        if local:
            samples = position + np.arange(count) - PEAK_DELAY
            ceilings = lowered[np.clip(samples // window, 0, len(lowered) - 1)]
        position += count
        return limiter(block, ceilings, found)

    for block in blocks:
        block = block * gain
        out = limit(block if clip_db is None else soft_clip(block, clip_db))
        skip = min(to_skip, out.shape[1])
        to_skip -= skip
        yield out[:, skip:]
    yield limit(np.zeros((channels, limiter.latency)))[:, to_skip:]
