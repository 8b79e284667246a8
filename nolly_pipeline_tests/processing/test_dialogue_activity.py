"""Where the dialogue is: the frames it talks in, and the bins it surely dominates.

Their effect on quality is judged in ``test_denoise_quality.py``; here what the denoisers
rely on: the same answer whatever blocks the audio streams in, and the cases that would
turn the bin detector against the denoiser (silence before a noisy take).
"""

from __future__ import annotations

import numpy as np
import pytest

from nolly_pipeline.processing.dialogue_activity import DominantBins, TalkingFrames

BINS = 16
SILENCE = 1e-9


def _dominant() -> DominantBins:
    return DominantBins(BINS, margin_db=28.0, window=151, silence_power=SILENCE)


def _background(frames: int, level: float = 1e-4) -> np.ndarray:
    """Power spectra of a steady background (exponentially distributed, as noise's are)."""
    return level * np.random.default_rng(3).exponential(1.0, (frames, BINS))


@pytest.mark.parametrize("block", [1, 37, 400])
def test_bins_are_the_same_whatever_the_blocks(block: int) -> None:
    power = _background(1000)
    power[500:540, 2:6] *= 1e4
    power[:80] = 0.0
    whole = _dominant()(power)
    streamed = _dominant()
    parts = np.concatenate([streamed(power[i : i + block]) for i in range(0, len(power), block)])
    np.testing.assert_array_equal(parts, whole)


def test_dialogue_far_over_the_background_dominates_and_the_background_never_does() -> None:
    power = _background(600)
    power[300:340, 2:6] = 1e4 * 1e-4  # 40 dB over the background's mean in four bins
    dominant = _dominant()(power)
    assert dominant[300:340, 2:6].all()
    assert not dominant[:, 6:].any() and not dominant[:300].any()


def test_dialogue_only_slightly_over_the_background_is_left_to_the_model() -> None:
    power = _background(600)
    power[300:340, 2:6] *= 10  # 10 dB: the model may be right that it is background
    assert not _dominant()(power).any()


def test_silence_before_a_noisy_take_is_not_taken_for_its_background() -> None:
    """Digital silence would floor the background at zero and make the whole start of the
    take "dialogue" for 1.5 s, leaving its noise in; silent frames are left out instead."""
    power = np.concatenate([np.zeros((200, BINS)), _background(300)])
    assert not _dominant()(power).any()


def test_talking_frames_keep_their_peak_across_blocks() -> None:
    power = _background(400)
    power[100:150] *= 1e3
    whole = TalkingFrames(2 * (BINS - 1), 8000, range_db=20.0, release_db=0.05, floor_power=1e-20)(power)
    streamed = TalkingFrames(2 * (BINS - 1), 8000, range_db=20.0, release_db=0.05, floor_power=1e-20)
    parts = np.concatenate([streamed(power[i : i + 33]) for i in range(0, len(power), 33)])
    np.testing.assert_array_equal(parts, whole)
    # 30 dB over the background, released by 5 dB/s: the background stays out of the 20 dB
    # range until the peak has come down nearly 10 dB, some 150-200 frames on.
    assert whole[100:150].all() and not whole[155:290].any()
