"""Build the frozen VLM that a ``vlm`` params section names: the one place heavy models are made.

``p`` is anything with the fields of ``pin.params.VLMParams`` (the library does not import the
pipeline's params)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pin.vlm.base import FrozenVLM, resolve_device

if TYPE_CHECKING:
    from pin.params import VLMParams


def load_vlm(p: VLMParams, device: torch.device | None = None) -> FrozenVLM:
    """``device``: where this process's copy goes (under ``accelerate launch``, the process's own
    GPU); None: ``p.device``."""
    vlm = _load(p, device)
    if p.image_size is not None:
        vlm.set_image_size(p.image_size)
    return vlm


def _load(p: VLMParams, device: torch.device | None) -> FrozenVLM:
    device = resolve_device(p.device if device is None else device, key="vlm.device")
    dtype = torch.bfloat16 if device.type == "cuda" else None
    if p.name == "mini":
        from pin.vlm.mini import load_mini

        return load_mini(p.path, device=device)
    if p.name == "openflamingo":
        from pin.vlm.openflamingo import OpenFlamingoAdapter

        return OpenFlamingoAdapter.from_pretrained(
            p.checkpoint, p.lang_model, clip_model=p.clip_model, clip_pretrained=p.clip_pretrained,
            device=device, dtype=dtype,
        )
    if p.name == "blip2":
        from pin.vlm.blip2 import Blip2Adapter

        return Blip2Adapter.from_pretrained(p.blip2_model, device=device, dtype=dtype)
    raise ValueError(f"unknown vlm.name {p.name!r}")
