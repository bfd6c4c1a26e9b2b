"""PIN and the paper's baselines as interchangeable methods of the same train and evaluate stages
(params: ``method``, ``pin``, ``baselines``). See :mod:`pin.methods.base` for the interface."""
from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load as st_load

from pin.errors import PinError
from pin.methods.base import CONFIG_FILE, WEIGHTS_FILE, Method
from pin.methods.coop import LlmContext
from pin.methods.lora import LoraVision
from pin.methods.pin_method import PinMethod
from pin.methods.untrained import InContext, RandomBoxes, RawVLM
from pin.methods.vpt import FusionPrompts, VisionPrompts

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
    """A method saved by ``save_pretrained`` (or a bare PositionalInsert folder), for ``vlm``."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise PinError(f"{folder}: no trained method here (no {CONFIG_FILE}); train one with `dvc repro train`")
    try:
        info = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError) as err:
        raise PinError(f"{folder}: no readable {CONFIG_FILE} ({err}); retrain it with `dvc repro train`") from None
    if "pin_insert" in info:
        from pin.insert import PositionalInsert

        return PinMethod(PositionalInsert.from_pretrained(folder))
    name = info.get("method")
    if name not in METHODS:
        raise PinError(f"{folder / CONFIG_FILE}: unknown method {name!r}")
    try:
        method = METHODS[name].build(vlm, **info.get("config", {}))
        state = st_load((folder / WEIGHTS_FILE).read_bytes())
        method.load_trainable_state(state)
    except (OSError, TypeError, ValueError, RuntimeError, SafetensorError) as err:
        raise PinError(f"{folder}: cannot load the saved {name} method: {err}") from None
    return method


def saved_grid(folder: str | Path) -> int | None:
    """The box grid a saved method was trained to answer on (``grid`` in its config.json), or
    None for a folder saved before the grid was recorded (or with no readable config)."""
    try:
        grid = json.loads((Path(folder) / CONFIG_FILE).read_text()).get("grid")
    except (OSError, ValueError, AttributeError):
        return None
    return grid if isinstance(grid, int) and not isinstance(grid, bool) and grid > 0 else None


__all__ = ["METHODS", "Method", "build_method", "load_method", "saved_grid"]
