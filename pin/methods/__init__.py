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
from pin.methods.insert import PinMethod
from pin.methods.lora import LoraVision
from pin.methods.untrained import InContext, RandomBoxes, RawVLM
from pin.methods.vpt import FusionPrompts, VisionPrompts

METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (PinMethod, FusionPrompts, VisionPrompts, LlmContext, LoraVision, InContext, RawVLM, RandomBoxes)
}


def method_config(name: str, pin_p, baselines_p) -> dict:
    """The keyword arguments of method ``name`` from the ``pin`` and ``baselines`` params."""
    if name == "pin":
        return {"layers": pin_p.layers, "table": pin_p.table, "layout": pin_p.layout,
                "hidden": tuple(pin_p.hidden) if pin_p.hidden else None}
    b = baselines_p
    return {
        "vpt_fusion": {"tokens": b.vpt_tokens},
        "vpt_vision": {"tokens": b.vpt_tokens},
        "coop_llm": {"tokens": b.coop_tokens},
        "lora_vision": {"r": b.lora_r, "alpha": b.lora_alpha},
        "incontext": {"shots": tuple(b.incontext_shots), "repeats": b.incontext_repeats},
        "raw": {},
        "random": {},
    }[name]


def build_method(name: str, vlm, pin_p, baselines_p) -> Method:
    """A fresh (untrained) method for ``vlm``; call ``torch.manual_seed`` first for a fixed init."""
    if name not in METHODS:
        raise PinError(f"method: unknown method {name!r} (one of {', '.join(METHODS)})")
    return METHODS[name].build(vlm, **method_config(name, pin_p, baselines_p))


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


__all__ = ["METHODS", "Method", "build_method", "load_method", "method_config"]
