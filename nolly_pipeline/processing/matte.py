"""The person matte of local roto: model inference, temporal smoothing, edge-aware upsampling.

MediaPipe's selfie-segmentation TFLite models run through OpenCV's DNN module at 256x256
(or 256x144 for wide frames); the small matte is smoothed over time where the picture did
not change, then brought to full resolution, optionally along the picture's edges with a
colour guided filter. Pure OpenCV and numpy: ``roto.py`` does the decoding and encoding.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from nolly_pipeline.errors import PermanentError

# Per-pixel picture change (0..1, mean over RGB at model resolution) below which a pixel
# counts as unchanged; above sensor grain and compression noise, below real motion.
_STILL_PICTURE_DELTA = 0.06
# Guided filter, computed at 1/4 resolution (the "fast guided filter"): window radius in
# those pixels, and regularisation (larger = smoother, less picture detail in the matte).
_REFINE_RADIUS = 4
_REFINE_EPS = 1e-3


class Matter:
    """Turns frames into full-resolution 8-bit mattes, remembering the previous frame."""

    def __init__(
        self, model_path: Path, *, landscape: bool, smoothing: float, refine_edges: bool
    ) -> None:
        try:
            self._net = cv2.dnn.readNetFromTFLite(str(model_path))
        except cv2.error:
            raise PermanentError(f"roto model {model_path.name} could not be loaded") from None
        self.model_name = model_path.name
        self.input_size = (256, 144) if landscape else (256, 256)  # (width, height)
        self._smoothing = smoothing
        self._refine = refine_edges
        self._prev_rgb: np.ndarray | None = None
        self._prev_matte: np.ndarray | None = None

    def infer(self, rgb_small: np.ndarray) -> np.ndarray:
        """Person probability (float32, 0..1) at model resolution for an RGB uint8 image."""
        self._net.setInput(cv2.dnn.blobFromImage(rgb_small, scalefactor=1 / 255.0))
        return self._net.forward()[0, 0]

    def smooth(self, rgb_small: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Blend ``raw`` with the previous matte where the picture has not changed.

        A still shot's matte otherwise shimmers, because grain and compression noise nudge
        the model; weighting by the *picture* change (not the matte change) keeps real
        motion sharp: a pixel whose content moved takes the new matte value outright.
        """
        rgb = rgb_small.astype(np.float32) * (1 / 255.0)
        if self._prev_matte is None or self._smoothing == 0.0:
            matte = raw
        else:
            delta = cv2.blur(np.abs(rgb - self._prev_rgb).mean(axis=2), (3, 3))
            keep = self._smoothing * np.exp(-np.square(delta / _STILL_PICTURE_DELTA))
            matte = raw + keep * (self._prev_matte - raw)
        self._prev_rgb, self._prev_matte = rgb, matte
        return matte

    @property
    def refines(self) -> bool:
        return self._refine

    def upsample(
        self, matte: np.ndarray, size: tuple[int, int], guide: np.ndarray | None = None
    ) -> np.ndarray:
        """Full-resolution (``size`` = width, height) uint8 matte.

        With edge refinement on, ``guide`` is the picture at half resolution, 3 channels in
        any colour space (YUV for video, BGR for stills: the filter is linear in the guide).
        """
        if self._refine and guide is not None:
            return _guided_upsample(matte, guide, size)
        small = np.clip(matte * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return cv2.resize(small, size, interpolation=cv2.INTER_LINEAR)


def _box(image: np.ndarray) -> np.ndarray:
    return cv2.blur(image, (2 * _REFINE_RADIUS + 1,) * 2)


def _guided_upsample(
    matte: np.ndarray, guide_half: np.ndarray, size: tuple[int, int]
) -> np.ndarray:
    """Colour fast guided filter (He & Sun 2015) restricted to the matte's edge band.

    Fits ``matte = A . colour + b`` in local windows at 1/4 resolution, applies the fit to the
    half-resolution picture and upsamples, so matte edges follow picture edges (hair,
    shoulders) instead of the model's 256-pixel grid. Inside solid regions the model is
    trusted as is: a local fit there would print the picture's texture into the matte.
    """
    half_h, half_w = guide_half.shape[:2]
    work = (max(half_w // 2, 1), max(half_h // 2, 1))
    guide = cv2.resize(guide_half, work, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    p = cv2.resize(matte, work, interpolation=cv2.INTER_LINEAR)
    mean_i = _box(guide)
    mean_p = _box(p)
    cov_ip = _box(guide * p[..., None]) - mean_i * mean_p[..., None]
    # Per-pixel symmetric 3x3 covariance of the guide, regularised, inverted by cofactors
    # (np.linalg.solve on 100k tiny systems is ten times slower).
    var = {
        (i, j): _box(guide[..., i] * guide[..., j]) - mean_i[..., i] * mean_i[..., j]
        + (_REFINE_EPS if i == j else 0.0)
        for i in range(3) for j in range(i, 3)
    }  # fmt: skip
    rr, rg, rb, gg, gb, bb = (var[k] for k in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)))
    inv = [
        [gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb],
        [None, rr * bb - rb * rb, rb * rg - rr * gb],
        [None, None, rr * gg - rg * rg],
    ]
    det = rr * inv[0][0] + rg * inv[0][1] + rb * inv[0][2]
    sym = lambda i, j: inv[min(i, j)][max(i, j)]  # noqa: E731 - the inverse is symmetric too
    a = [sum(sym(i, j) * cov_ip[..., j] for j in range(3)) / det for i in range(3)]
    b = mean_p - sum(a[i] * mean_i[..., i] for i in range(3))
    kernel = np.ones((2 * _REFINE_RADIUS + 1,) * 2, np.uint8)
    band = cv2.dilate((p > 0.02).astype(np.uint8), kernel) & cv2.dilate(
        (p < 0.98).astype(np.uint8), kernel
    )
    weight = _box(band.astype(np.float32))
    half = (half_w, half_h)
    # Apply q = A . colour + b at half resolution in 0..255 units, so the guide stays uint8.
    refined = cv2.resize((_box(b) * weight + p * (1.0 - weight)) * 255.0, half)
    for channel in range(3):
        coeff = cv2.resize(_box(a[channel]) * weight, half)
        refined += cv2.multiply(guide_half[..., channel], coeff, dtype=cv2.CV_32F)
    refined = np.clip(refined + 0.5, 0, 255).astype(np.uint8)
    return cv2.resize(refined, size, interpolation=cv2.INTER_LINEAR)
