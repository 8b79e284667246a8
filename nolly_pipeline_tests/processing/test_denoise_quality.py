"""The default denoiser keeps dialogue intelligible and cleans as well as the peers.

A short version of ``benchmarks/audio_quality.py``: one 10 s clip per noise kind and SNR,
judged by independent meters (STOI by pystoi, DNSMOS P.835 by speechmos) side by side with
the peers in the same run. STOI on all 18 clips; DNSMOS on the 5 dB clips (it costs ~0.5 s
of CPU per clip and per method).
"""

from __future__ import annotations

import os
import shutil

import pytest

from nolly_pipeline.processing.settings import AudioCleanSettings
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
    methods = {"ours": q.ours({}), "afftdn": q.peer_afftdn, "noisereduce": q.peer_noisereduce,
               "NSNet2": q.NSNet2Peer(48_000)}
    peers_on = [c for c in clips if c.snr == 5.0]
    ours = q.evaluate(clips, {"ours": methods["ours"]},
                      dnsmos=lambda method, clip: method == "ours" and clip.snr == 5.0)
    peers = q.evaluate(peers_on, {name: methods[name] for name in PEERS},
                       dnsmos=lambda method, clip: method != "none")
    ours.scores.update({name: peers.scores[name] for name in PEERS})
    ours.methods += list(PEERS)
    return ours


def test_ratio_interval_pairs_the_clips_and_brackets_the_ratio():
    """The benchmark's bootstrap interval: clips scored by both methods only, drawn in pairs."""
    ours = {("rain", 5.0): [q.Score(3.0, 0.9), q.Score(2.0, 0.9)], ("rain", 0.0): [q.Score(float("nan"), 0.8)]}
    peer = {("rain", 5.0): [q.Score(2.0, 0.9), q.Score(2.0, 0.9)]}
    results = q.Results(["ours", "peer"], {"ours": ours, "peer": peer})
    low, high = results.ratio_interval("ours", "peer")
    assert 1.0 <= low < 1.25 < high <= 1.5
    same = q.Results(["ours", "peer"], {"ours": peer, "peer": peer})
    assert same.ratio_interval("ours", "peer") == (1.0, 1.0)


def test_default_denoiser_keeps_dialogue_intelligible(results):
    """STOI drops by at most 0.03 from the unprocessed input in every noise kind at 0, 5, 10 dB.

    The crowd and canteen noises are other people talking: the first default (RNNoise) took
    STOI from 0.83 to 0.62 there, gating the dialogue together with the extras, and
    DeepFilterNet3 without its limits drops 0.081 under the crowd at 10 dB.
    """
    drops = results.stoi_drops("ours")
    assert len(drops) == len(q.NOISES) * len(q.SNRS)
    assert max(drops.values()) <= 0.03, _readable(drops)


def _readable(drops: dict[tuple[str, float], float]) -> dict[str, float]:
    return {f"{noise} {snr:g} dB": round(drop, 3) for (noise, snr), drop in drops.items()}


def _drops_at_the_real_defaults(clips, settings: dict) -> dict[tuple[str, float], float]:
    """STOI drop per noise kind and SNR of a whole job at the default loudness (-16 LUFS)."""
    job = q.evaluate(clips, {"ours": q.ours({"loudness_lufs": AudioCleanSettings().loudness_lufs, **settings})},
                     dnsmos=lambda method, clip: False)
    return job.stoi_drops("ours")


def test_the_loudness_stage_alone_keeps_most_of_the_dialogue(clips):
    """With ``denoise: off`` at -16 LUFS, the limiter takes ~5 dB off every syllable of this
    speech. Its 2 ms look-ahead and 10 ms release dip the gain on each glottal peak, not over
    each syllable: measured 0.041 (traffic, 5 dB), where 5 ms / 100 ms cost 0.080. A
    regression guard: the issue's floor, 0.03, is the strict xfail below."""
    drops = _drops_at_the_real_defaults(clips, {"denoise": "off"})
    assert max(drops.values()) <= 0.045, _readable(drops)


@pytest.mark.xfail(strict=True, reason=(
    "known gap: at the real default loudness (-16 LUFS under -1.5 dBTP, issue 3's defaults) the "
    "true-peak limiter takes ~5 dB off every syllable of espeak-ng's speech; under the crowd at "
    "10 dB its cost adds to the denoiser's 0.029: measured 0.054 (0.071 with the 5 ms / 100 ms "
    "limiter). The benchmark corpus meets the floor at the real defaults: 0.019 "
    "(docs/benchmarks.md)"))
def test_a_job_at_the_real_defaults_keeps_dialogue_intelligible(clips):
    """The floor above, for the whole job at its default loudness target, not the denoiser alone."""
    drops = _drops_at_the_real_defaults(clips, {})
    assert max(drops.values()) <= 0.03, _readable(drops)


def _dnsmos(results) -> dict[str, float]:
    return {m: round(results.mean(m, "dnsmos"), 3) for m in ("ours", *PEERS)}


def test_default_denoiser_cleans_far_more_than_afftdn_and_noisereduce(results):
    """At least 1.1x the DNSMOS OVRL of the better of afftdn and noisereduce (measured 1.31x:
    2.925 vs noisereduce's 2.240)."""
    means = _dnsmos(results)
    assert means["ours"] >= 1.1 * max(means["afftdn"], means["noisereduce"]), means


def test_default_denoiser_cleans_more_than_plain_nsnet2(results):
    """The limits that keep the dialogue still leave the default (DeepFilterNet3) cleaner than
    plain NSNet2 (measured 1.06x). A regression guard, not the goal: that is the strict xfail
    below."""
    means = _dnsmos(results)
    assert means["ours"] >= 1.03 * means["NSNet2"], means


@pytest.mark.xfail(strict=True, reason=(
    "known gap: the issue's goal of 1.1x the best peer's DNSMOS OVRL is not reached: "
    "1.06x plain NSNet2 here (2.925 vs 2.766 on the 5 dB clips), 1.087x on the benchmark "
    "corpus (docs/benchmarks.md). DeepFilterNet3 with no limit at all reaches only 1.08x here, "
    "and the clean speech itself (a perfect denoiser's output) scores only 1.015x NSNet2's "
    "output here, 1.071x on the benchmark's espeak-ng corpus"))
def test_default_denoiser_dnsmos_is_a_tenth_over_the_best_peer(results):
    means = _dnsmos(results)
    assert means["ours"] >= 1.1 * max(means[p] for p in PEERS), means
