"""Methods that train nothing: the raw VLM, random boxes and OpenFlamingo's in-context learning.

The evaluate stage always reports ``raw`` and ``random`` next to any method; choosing them as
the ``method`` makes the train stage a no-op that records zero trainable parameters. In-context
learning (paper Sec. 5.1) is evaluated by :mod:`pin.eval.incontext`.
"""
from __future__ import annotations

from pin.errors import PinError
from pin.methods.base import Method


class RawVLM(Method):
    name = "raw"
    trains = False

    def __init__(self, vlm=None):
        super().__init__()


class RandomBoxes(Method):
    name = "random"
    trains = False

    def __init__(self, vlm=None):
        super().__init__()


class InContext(Method):
    """k context images with their box answers from the synthetic training set before the query
    (one interleaved prompt), for each k in ``shots``, ``repeats`` context draws each."""

    name = "incontext"
    trains = False

    def __init__(self, vlm, shots: tuple[int, ...] = (2, 5, 10), repeats: int = 10):
        super().__init__()
        if not getattr(vlm, "supports_interleaved_images", False):
            raise PinError(
                f"method=incontext needs a VLM trained on interleaved image-text data (OpenFlamingo, the "
                f"mini VLM); vlm.name={vlm.name} cannot take several images per prompt (paper Sec. 5.1)"
            )
        self.shots = tuple(int(k) for k in shots)
        self.repeats = int(repeats)

    @classmethod
    def from_params(cls, vlm, pin_p, baselines_p) -> "InContext":
        return cls(vlm, shots=tuple(baselines_p.incontext_shots), repeats=baselines_p.incontext_repeats)

    def config(self) -> dict:
        return {"shots": list(self.shots), "repeats": self.repeats}
