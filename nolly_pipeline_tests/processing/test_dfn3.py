"""DeepFilterNet3 through the Denoiser: aligned, streamed block-size independent, strength in dB.

Quality (DNSMOS, STOI against the peers) is judged in ``test_denoise_quality.py``; here the
mechanics a job relies on: output sample n is input sample n, the blocks the decoder
happens to deliver do not change the result, and ``strength`` does what the setting says.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from nolly_pipeline.processing.denoise import Denoiser
from nolly_pipeline.processing import dfn3
from nolly_pipeline.processing.dfn3 import DFN3, post_filter
from nolly_pipeline.processing.models import denoise_model_path, fetch_denoise_model
from nolly_pipeline_tests.processing.reference import mix_at_snr


@pytest.fixture(scope="module")
def model_dir():
    return denoise_model_path(fetch_denoise_model(), "dfn3")


def _denoise(model_dir, signal: np.ndarray, *, block: int = 12_000, strength: float = 1.0) -> np.ndarray:
    """Through the Denoiser as audio_clean feeds it: ``block`` samples at a time, then flush."""
    denoiser = Denoiser("dfn3", signal.shape[0], strength=strength, model_path=model_dir)
    try:
        outs = [denoiser.process(signal[:, start : start + block])
                for start in range(0, signal.shape[1], block)]
        outs.append(denoiser.flush())
    finally:
        denoiser.close()
    return np.concatenate(outs, axis=1)


def _noise(seconds: float, level: float = 0.03) -> np.ndarray:
    return level * np.random.default_rng(1).standard_normal((1, int(48_000 * seconds)))


def _db(signal: np.ndarray) -> float:
    return 10 * np.log10(np.mean(signal**2))


def test_output_lines_up_with_the_input_and_keeps_its_length(model_dir, speech_48k):
    """The latency (a batch of two chunks the model runs ahead, lookahead, speech-limit hang,
    overlap-add: 8 s + 2880 samples) is removed."""
    noisy = mix_at_snr(speech_48k, _noise(len(speech_48k) / 48_000)[0], 5.0)
    cleaned = _denoise(model_dir, noisy[None, :])[0]
    assert len(cleaned) == len(noisy)
    lags = np.arange(-2000, 2001)
    core = slice(4000, len(speech_48k) - 4000)
    reference = speech_48k[core]
    scores = [np.dot(reference, cleaned[4000 + lag : len(speech_48k) - 4000 + lag]) for lag in lags]
    assert lags[int(np.argmax(scores))] == 0
    assert DFN3.latency == 384_000 + 2880


def test_block_size_does_not_change_the_output(model_dir, speech_48k):
    """Chunks of 4 s with 2 s of context whatever the blocks: the same samples, bit for bit."""
    noisy = mix_at_snr(speech_48k, _noise(len(speech_48k) / 48_000)[0], 5.0)[None, :]
    small = _denoise(model_dir, noisy, block=12_000)
    odd = _denoise(model_dir, noisy, block=7_777)
    whole = _denoise(model_dir, noisy, block=noisy.shape[1])
    np.testing.assert_allclose(small, whole, atol=1e-9)
    np.testing.assert_allclose(odd, whole, atol=1e-9)


def test_two_chunks_at_once_give_the_samples_of_one_after_the_other(model_dir, speech_48k, monkeypatch):
    """The model runs the next chunk while the last one is finished; each chunk starts from
    its own context, so running them one at a time changes nothing."""
    noisy = mix_at_snr(speech_48k, _noise(len(speech_48k) / 48_000)[0], 5.0)[None, :]
    noisy = np.concatenate([noisy] * 3, axis=1)  # several chunks
    at_once = _denoise(model_dir, noisy)
    with ThreadPoolExecutor(1) as one:
        monkeypatch.setattr(dfn3, "_model_pool", lambda: one)
        one_by_one = _denoise(model_dir, noisy)
    np.testing.assert_array_equal(at_once, one_by_one)


@pytest.mark.parametrize("batch", [1, 3])
def test_the_batch_size_does_not_change_the_output(model_dir, speech_48k, monkeypatch, batch):
    """Chunks of other lengths (the first has no context, the last is short) never join a
    batch, and a batch gives each chunk what it gets alone."""
    noisy = mix_at_snr(speech_48k, _noise(len(speech_48k) / 48_000)[0], 5.0)[None, :]
    noisy = np.concatenate([noisy] * 3, axis=1)
    default = _denoise(model_dir, noisy)
    frame = DFN3.hop * DFN3._chunk * batch
    monkeypatch.setattr(DFN3, "_batch", batch)
    monkeypatch.setattr(DFN3, "frame", frame)
    monkeypatch.setattr(DFN3, "latency", frame + DFN3._held)
    np.testing.assert_array_equal(_denoise(model_dir, noisy), default)


def test_silence_stays_silent(model_dir):
    assert np.max(np.abs(_denoise(model_dir, np.zeros((1, 48_000 * 5))))) == 0.0


def test_stereo_channels_are_denoised_independently(model_dir):
    noise = _noise(5)
    stereo = _denoise(model_dir, np.concatenate([noise, 0.5 * noise]))
    mono = _denoise(model_dir, noise)
    np.testing.assert_allclose(stereo[0], mono[0], atol=1e-12)
    assert _db(stereo[1]) < _db(0.5 * noise) - 10


def test_strength_scales_the_attenuation_in_db(model_dir):
    """0 returns the input; 0.5 takes half as many dB off steady noise as 1."""
    noise = _noise(6)
    np.testing.assert_allclose(_denoise(model_dir, noise, strength=0.0), noise, atol=1e-12)
    settled = slice(48_000, None)  # past the first second, where the running means settle
    full = _db(_denoise(model_dir, noise)[:, settled]) - _db(noise[:, settled])
    half = _db(_denoise(model_dir, noise, strength=0.5)[:, settled]) - _db(noise[:, settled])
    assert full < -10
    assert half == pytest.approx(full / 2, abs=1.0)


def _denoised_level_db(model_dir) -> float:
    return _db(_denoise(model_dir, _noise(5)))


def test_a_forked_worker_denoises_after_its_parent_did(model_dir):
    """Run workers are forked: the parent's model threads do not exist in the child, which
    must start its own rather than wait on them forever."""
    parent = _denoised_level_db(model_dir)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(_denoised_level_db, (model_dir,)).get(timeout=120)
    assert child == pytest.approx(parent, abs=1e-9)


def test_post_filter_deepens_partial_gains_only():
    """DeepFilterNet's post-filter keeps whole bands whole and shut bands shut, and cuts
    half-kept bands further, never lifting any (values of its ``Mask.pf`` at beta 0.02)."""
    mask = np.linspace(0.0, 1.0, 101, dtype=np.float32)
    filtered = post_filter(mask)
    assert filtered.dtype == np.float32
    assert filtered[0] == 0.0 and filtered[-1] == pytest.approx(1.0)
    assert np.all(filtered <= mask + 1e-7)
    assert np.all(np.diff(filtered) >= 0)
    np.testing.assert_allclose(post_filter(np.array([0.05, 0.2, 0.5], np.float32)),
                               [0.0120, 0.1687, 0.4904], atol=1e-4)
