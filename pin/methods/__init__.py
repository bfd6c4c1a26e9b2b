"""PIN and the paper's baselines as interchangeable methods of the same train and evaluate stages
(params: ``method``, ``pin``, ``baselines``). See :mod:`pin.methods.base` for the interface."""
from __future__ import annotations

from pathlib import Path

from pin.errors import PinError
from pin.methods.base import Method
from pin.methods.coop import LlmContext
from pin.methods.lora import LoraVision
from pin.methods.pin_method import PinMethod
from pin.methods.untrained import InContext, RandomBoxes, RawVLM
from pin.methods.vpt import FusionPrompts, VisionPrompts
from pin.saved import CONFIG_FILE, read_method, read_weights, saved_grid

# The one list of methods: params' `method` check, the stages and the loader all read it.
METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (PinMethod, FusionPrompts, VisionPrompts, LlmContext, LoraVision, InContext, RawVLM, RandomBoxes)
}


def build_method(name: str, vlm, pin_p, baselines_p) -> Method:
    """A fresh (untrained) method for ``vlm``; call ``torch.manual_seed`` first for a fixed init."""
    if name not in METHODS:
        raise PinError(f"method: unknown method {name!r} (one of {', '.join(METHODS)})")
    return METHODS[name].from_params(vlm, pin_p, baselines_p)


def load_method(folder: str | Path, vlm) -> Method:
    """The method saved in ``folder`` (any method, either folder format of :mod:`pin.saved`), for ``vlm``."""
    saved = read_method(folder)
    if saved.method not in METHODS:
        raise PinError(f"{saved.folder / CONFIG_FILE}: unknown method {saved.method!r} (one of {', '.join(METHODS)})")
    try:
        method = METHODS[saved.method].build(vlm, **saved.config)
    except (TypeError, ValueError) as err:
        raise PinError(f"{saved.folder / CONFIG_FILE}: cannot rebuild the saved {saved.method} method: {err}") from None
    state = read_weights(saved.folder)
    try:
        method.load_trainable_state(state)
    except RuntimeError as err:
        raise PinError(f"{saved.folder}: the saved {saved.method} weights do not match {CONFIG_FILE}: {err}") from None
    return method


__all__ = ["METHODS", "Method", "build_method", "load_method", "saved_grid"]
