"""The batch-size rewrite of DeepFilterNet3's graphs: any batch runs, and runs as singles do."""

from __future__ import annotations

import numpy as np
import pytest

from nolly_pipeline.processing.models import denoise_model_path, fetch_denoise_model
from nolly_pipeline.processing.onnx_batch import with_free_batch

onnxruntime = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def encoders():
    """The export's encoder as shipped, and rewritten."""
    path = denoise_model_path(fetch_denoise_model(), "dfn3") / "enc.onnx"
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    shipped = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    freed = onnxruntime.InferenceSession(with_free_batch(path.read_bytes()), options,
                                         providers=["CPUExecutionProvider"])
    return shipped, freed


def _features(batch: int, frames: int = 60) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch)
    return {"feat_erb": rng.standard_normal((batch, 1, frames, 32)).astype(np.float32),
            "feat_spec": 0.1 * rng.standard_normal((batch, 2, frames, 96)).astype(np.float32)}


def test_the_shipped_graph_takes_batch_one_only(encoders):
    shipped, _ = encoders
    with pytest.raises(Exception, match="dimensions"):
        shipped.run(None, _features(3))


def test_a_batch_gives_each_member_what_it_gives_alone(encoders):
    """Bit for bit: chunks batched together are not mixed, nor computed differently."""
    shipped, freed = encoders
    features = _features(3)
    batched = freed.run(None, features)
    for member in range(3):
        alone = shipped.run(None, {name: value[member : member + 1] for name, value in features.items()})
        for together, single in zip(batched, alone, strict=True):
            np.testing.assert_array_equal(together[member : member + 1], single)


def test_only_the_batch_dimension_is_freed(encoders):
    _, freed = encoders
    features = _features(2)
    features["feat_erb"] = np.concatenate([features["feat_erb"]] * 2, axis=1)  # 2 where 1 is declared
    with pytest.raises(Exception, match="dimensions"):
        freed.run(None, features)
