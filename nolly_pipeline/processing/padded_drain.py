"""How a frame denoiser with a fixed latency ends its stream: zeros until all it held is out."""

from __future__ import annotations

import numpy as np


class PaddedDrain:
    """``drain`` for denoisers (callables on whole ``frame``s) whose output is ``latency`` late.

    DeepFilterNet3 has its own (``DFN3.drain``): its frame is a whole batch of model chunks,
    which padding would fill with zeros for the model to run on.
    """

    frame: int
    latency: int

    def drain(self, tail: np.ndarray) -> np.ndarray:
        """The last input (shorter than ``frame``), then zeros in whole frames until all that
        the denoiser holds back has come out: ``len(tail) + latency`` samples."""
        data = np.concatenate([tail, np.zeros(self.latency + self.frame)])
        return self(data[: len(data) - len(data) % self.frame])[: len(tail) + self.latency]
