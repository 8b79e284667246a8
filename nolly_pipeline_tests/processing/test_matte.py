"""The person matte: temporal smoothing where the picture holds still, edge-aware upsampling.

Whole clips through ``roto`` (the person kept, edges refined, frame counts) are tested in
``test_roto.py``; here what the matte does between the model and the output frames.
"""

from pathlib import Path

import numpy as np
import pytest

from nolly_pipeline.errors import PermanentError
from nolly_pipeline.processing.matte import Matter
from nolly_pipeline.processing.models import selfie_model_path
from nolly_pipeline_tests.processing import roto_fixtures

models_dir = roto_fixtures.models_dir  # the session-wide model cache fixture


def _matter(models_dir: Path, *, smoothing: float = 0.8, refine_edges: bool = False) -> Matter:
    return Matter(selfie_model_path(models_dir), landscape=False, smoothing=smoothing,
                  refine_edges=refine_edges)


def _picture(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (256, 256, 3), dtype=np.uint8)


def test_a_still_picture_keeps_the_previous_matte_and_motion_takes_the_new_one(models_dir):
    """Grain-free stillness: the matte blends towards the last one by ``smoothing``; where
    the picture changed, the new matte is taken outright (moving edges stay sharp)."""
    matter = _matter(models_dir, smoothing=0.8)
    picture = _picture(1)
    first = matter.smooth(picture, np.zeros((256, 256), np.float32))
    still = matter.smooth(picture, np.ones((256, 256), np.float32))
    moved = matter.smooth(_picture(2), np.ones((256, 256), np.float32))
    np.testing.assert_allclose(first, 0.0)
    np.testing.assert_allclose(still, 0.2, atol=1e-6)  # 1 + 0.8 * (0 - 1)
    assert np.mean(moved) > 0.99


def test_no_smoothing_returns_the_model_output(models_dir):
    matter = _matter(models_dir, smoothing=0.0)
    picture = _picture(1)
    matter.smooth(picture, np.zeros((256, 256), np.float32))
    raw = np.random.default_rng(4).uniform(0, 1, (256, 256)).astype(np.float32)
    np.testing.assert_array_equal(matter.smooth(picture, raw), raw)


@pytest.mark.parametrize("refine_edges", [False, True])
def test_upsampled_matte_keeps_solid_regions(models_dir, refine_edges):
    """Inside a solid region the model is trusted as is: no picture texture is printed into
    the matte, with or without the guided filter."""
    matter = _matter(models_dir, refine_edges=refine_edges)
    guide = np.random.default_rng(5).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    for value, expected in ((1.0, 255), (0.0, 0)):
        full = matter.upsample(np.full((256, 256), value, np.float32), (1280, 720), guide)
        assert full.shape == (720, 1280) and full.dtype == np.uint8
        assert np.all(full == expected)


def test_an_unreadable_model_is_a_permanent_error(tmp_path):
    broken = tmp_path / "selfie.tflite"
    broken.write_bytes(b"not a model")
    with pytest.raises(PermanentError, match="could not be loaded"):
        Matter(broken, landscape=False, smoothing=0.5, refine_edges=False)
