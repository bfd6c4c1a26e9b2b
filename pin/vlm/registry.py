"""Build the frozen VLM named in params (``vlm`` section): the one place heavy models are made."""
from __future__ import annotations

import torch

from pin.params import VLMParams
from pin.vlm.base import FrozenVLM


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def load_vlm(p: VLMParams) -> FrozenVLM:
    vlm = _load(p)
    if p.image_size is not None:
        vlm.set_image_size(p.image_size)
    return vlm


def _load(p: VLMParams) -> FrozenVLM:
    device = resolve_device(p.device)
    if p.name == "mini":
        from pin.vlm.mini import load_mini

        return load_mini(p.path, device=device)
    if p.name == "openflamingo":
        from pin.vlm.openflamingo import OpenFlamingoAdapter

        return OpenFlamingoAdapter.from_pretrained(
            p.checkpoint, p.lang_model, clip_model=p.clip_model, clip_pretrained=p.clip_pretrained,
            device=device, dtype=torch.bfloat16 if device == "cuda" else None,
        )
    if p.name == "blip2":
        from pin.vlm.blip2 import Blip2Adapter

        return Blip2Adapter.from_pretrained(p.blip2_model, device=device,
                                            dtype=torch.bfloat16 if device == "cuda" else None)
    raise ValueError(f"unknown vlm.name {p.name!r}")
