"""What the adapter reads off, or sets on, open_flamingo's modules: the cross-attention gates,
the vision tower's patch grid (where an insert goes) and whether the LM takes position ids."""
from __future__ import annotations

import inspect

import torch

from pin.vlm.base import InsertSite


def set_gates(flamingo: torch.nn.Module, value: float) -> None:
    """Set every gated cross-attention gate (``attn_gate``, ``ff_gate``) to ``value``.

    A fresh Flamingo has all gates at 0 (tanh(0) = 0): the language model ignores the image and
    an insert gets exactly zero gradient. Tests with random weights open them (e.g. 1.0).
    """
    from open_flamingo.src.helpers import GatedCrossAttentionBlock

    with torch.no_grad():
        for m in flamingo.modules():
            if isinstance(m, GatedCrossAttentionBlock):
                m.attn_gate.fill_(value)
                m.ff_gate.fill_(value)


def site_of(visual: torch.nn.Module) -> InsertSite:
    gh, gw = visual.grid_size
    if gh != gw:
        raise ValueError(f"non-square patch grid {gh}x{gw} is not supported")
    width = visual.positional_embedding.shape[-1]  # conv1 may be a convolutional stem
    has_cls = getattr(visual, "pool_type", "tok") == "none"  # 'tok'/'avg' drop the CLS token
    return InsertSite(n_positions=gh * gw + int(has_cls), width=width, grid=gh, has_cls=has_cls)


def lm_takes_position_ids(lang_encoder: torch.nn.Module) -> bool:
    """Whether the LM under the Flamingo mixin accepts ``position_ids`` (Llama does; the MPT
    remote code, which uses ALiBi, may not)."""
    from open_flamingo.src.flamingo_lm import FlamingoLMMixin

    if isinstance(lang_encoder, FlamingoLMMixin):  # the mixin's forward takes **kwargs: look past it
        inner = super(FlamingoLMMixin, lang_encoder).forward
    else:
        inner = lang_encoder.forward
    try:
        params = inspect.signature(inner).parameters
    except (TypeError, ValueError):
        return False
    return "position_ids" in params
