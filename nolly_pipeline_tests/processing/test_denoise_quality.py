"""The default denoiser keeps dialogue intelligible and cleans as well as the peers.

A short version of ``benchmarks/audio_quality.py``: one 10 s clip per noise kind and SNR
(18 clips, where the benchmark has two speakers per cell), judged by independent meters
(STOI by pystoi, DNSMOS P.835 by speechmos) side by side with the peers in the same run. As
in the benchmark, our row is the whole job at its default settings (-16 LUFS), and every
meter reads every clip: the issue's goals are over every noise kind at 0, 5 and 10 dB.
"""

from __future__ import annotations

import os
import shutil

import pytest

from nolly_pipeline_tests.processing import speech_quality as q

pytest.importorskip("pystoi")
pytest.importorskip("speechmos")

PEERS = ("afftdn", "noisereduce", "NSNet2")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[q.Clip]:
    if shutil.which("espeak-ng") is None:
        if os.environ.get("CI"):
            pytest.fail("espeak-ng is required under CI (apt-get install -y espeak-ng)")
        pytest.skip("espeak-ng not installed")
    return q.corpus(10, 1, tmp_path_factory.mktemp("quality"))


@pytest.fixture(scope="module")
def results(clips) -> q.Results:
    """Our job at its defaults and the peers on every clip, DNSMOS and STOI on every output
    (~0.4 s of CPU per clip and method), as the benchmark measures them."""
    return q.evaluate(clips, {"ours": q.ours(q.AT_DEFAULTS), "afftdn": q.peer_afftdn,
                              "noisereduce": q.peer_noisereduce, "NSNet2": q.NSNet2Peer(48_000)},
                      dnsmos=lambda method, clip: method != "none")


def test_ratio_interval_pairs_the_clips_and_brackets_the_ratio():
    """The benchmark's bootstrap interval: clips scored by both methods only, drawn in pairs."""
    ours = {("rain", 5.0): [q.Score(3.0, 0.9), q.Score(2.0, 0.9)], ("rain", 0.0): [q.Score(float("nan"), 0.8)]}
    peer = {("rain", 5.0): [q.Score(2.0, 0.9), q.Score(2.0, 0.9)]}
    results = q.Results(["ours", "peer"], {"ours": ours, "peer": peer})
    low, high = results.ratio_interval("ours", "peer")
    assert 1.0 <= low < 1.25 < high <= 1.5
    same = q.Results(["ours", "peer"], {"ours": peer, "peer": peer})
    assert same.ratio_interval("ours", "peer") == (1.0, 1.0)


def _drops(clips, settings: dict) -> dict[tuple[str, float], float]:
    """STOI drop per noise kind and SNR of a job with ``settings`` (STOI only)."""
    job = q.evaluate(clips, {"ours": q.ours(settings)}, dnsmos=lambda method, clip: False)
    return job.stoi_drops("ours")


def _readable(drops: dict[tuple[str, float], float]) -> dict[str, float]:
    return {f"{noise} {snr:g} dB": round(drop, 3) for (noise, snr), drop in drops.items()}


def test_default_denoiser_keeps_dialogue_intelligible(clips):
    """STOI drops by at most 0.03 from the unprocessed input in every noise kind at 0, 5, 10 dB,
    for the denoiser (at -23 LUFS, where the limiter stays idle; measured 0.027, crowd 10 dB).

    The crowd and canteen noises are other people talking: the first default (RNNoise) took
    STOI from 0.83 to 0.62 there, gating the dialogue together with the extras, and
    DeepFilterNet3 without its limits drops 0.081 under the crowd at 10 dB.
    """
    drops = _drops(clips, {})
    assert len(drops) == len(q.NOISES) * len(q.SNRS)
    assert max(drops.values()) <= 0.03, _readable(drops)


def test_the_loudness_stage_alone_keeps_most_of_the_dialogue(clips):
    """With ``denoise: off`` at -16 LUFS, the limiter takes ~5 dB off every syllable of this
    speech. Its 2 ms look-ahead and 10 ms release dip the gain on each glottal peak, not over
    each syllable: measured 0.041 (traffic, 5 dB), where 5 ms / 100 ms cost 0.080. A
    regression guard: the issue's floor, 0.03, is the strict xfail below."""
    drops = _drops(clips, {**q.AT_DEFAULTS, "denoise": "off"})
    assert max(drops.values()) <= 0.045, _readable(drops)


@pytest.mark.xfail(strict=True, reason=(
    "known gap: at the real default loudness (-16 LUFS under -1.5 dBTP, issue 3's defaults) the "
    "true-peak limiter takes ~5 dB off every syllable of espeak-ng's speech; under the crowd at "
    "10 dB its cost adds to the denoiser's 0.029: measured 0.054 (0.071 with the 5 ms / 100 ms "
    "limiter). With nothing removed, the high-pass and loudness stage alone already cost 0.031 "
    "in that cell: the floor at -16 LUFS would need a denoiser that raises STOI under a crowd. "
    "The benchmark corpus meets the floor at the real defaults: 0.019 (docs/benchmarks.md)"))
def test_a_job_at_the_real_defaults_keeps_dialogue_intelligible(results):
    """The floor above, for the whole job at its default loudness target, not the denoiser alone."""
    drops = results.stoi_drops("ours")
    assert max(drops.values()) <= 0.03, _readable(drops)


def _dnsmos(results) -> dict[str, float]:
    return {m: round(results.mean(m, "dnsmos"), 3) for m in ("ours", *PEERS)}


def test_default_denoiser_cleans_far_more_than_afftdn_and_noisereduce(results):
    """At least 1.1x the DNSMOS OVRL of the better of afftdn and noisereduce (measured 1.36x:
    2.896 vs noisereduce's 2.124)."""
    means = _dnsmos(results)
    assert means["ours"] >= 1.1 * max(means["afftdn"], means["noisereduce"]), means


def test_default_denoiser_dnsmos_is_a_tenth_over_the_best_peer(results):
    """The issue's goal: mean DNSMOS OVRL at least 1.1x the best of the peers on the same
    clips. Measured 1.105x (2.896 vs NSNet2 48k's 2.622); the benchmark corpus reads 1.101x.

    Thin, and not everywhere: this corpus's 5 dB clips alone read 1.077x (where the clean
    line itself reads only 1.015x NSNet2's output), and three more corpora of the
    benchmark's design (seeds 12, 13, 14) read 1.093x, 1.089x and 1.079x (docs/benchmarks.md).
    What is left is under a crowd of talkers, where removing more of the crowd takes parts
    of the line with it. This asserts the goal on this corpus; it does not say the goal holds
    on any dialogue.
    """
    means = _dnsmos(results)
    assert means["ours"] >= 1.1 * max(means[p] for p in PEERS), means
