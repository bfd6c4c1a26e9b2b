"""Visual Prompt Tuning (Jia et al. 2022) baselines of the paper (Sec. 5.1, Tab. 1): 100 learnable
tokens appended either where PIN is added (the fusion network's input, ``vpt_fusion``) or to the
token sequence inside the frozen vision encoder (``vpt_vision``, VPT-shallow)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from pin.methods.base import Method, xavier_tokens


class FusionPrompts(Method):
    """VPT on the fusion network F: ``tokens`` extra inputs of the perceiver / Q-Former, next to
    every image's patch features (the encoder is untouched, so features can be cached)."""

    name = "vpt_fusion"

    def __init__(self, vlm, tokens: int = 100):
        super().__init__()
        self.tokens = xavier_tokens(tokens, vlm.site.width)

    def conditioning(self) -> dict[str, torch.Tensor]:
        return {"fusion_tokens": self.tokens}

    @classmethod
    def from_params(cls, vlm, pin_p, baselines_p) -> "Method":
        return cls(vlm, tokens=baselines_p.vpt_tokens)

    def config(self) -> dict:
        return {"tokens": self.tokens.shape[0]}


class VisionPrompts(Method):
    """VPT on the vision encoder: ``tokens`` learnable tokens join the ViT's sequence after the
    CLS token before the first block. After the last block they either stay in the encoder's
    output, moved after the patch tokens, so the fusion network reads them too (``keep``, the
    authors' code: 100 more perceiver / Q-Former inputs), or leave it (``keep=False``: the output
    keeps its shape and only the patch tokens carry what the prompts did). Gradients flow through
    the frozen encoder; hooks on its first and last block do this, only inside ``vision()``."""

    name = "vpt_vision"
    encodes_pixels = True

    def __init__(self, vlm, tokens: int = 100, keep: bool = True):
        super().__init__()
        self.tokens = xavier_tokens(tokens, vlm.site.width)
        self.keep = keep

    @classmethod
    def from_params(cls, vlm, pin_p, baselines_p) -> "Method":
        return cls(vlm, tokens=baselines_p.vpt_tokens, keep=baselines_p.vpt_vision_output == "keep")

    def config(self) -> dict:
        return {"tokens": self.tokens.shape[0], "keep": self.keep}

    @contextlib.contextmanager
    def vision(self, vlm) -> Iterator[None]:
        blocks = vlm.vision_blocks
        n = self.tokens.shape[0]

        def join(_module, args, kwargs):
            x = args[0]
            prompts = self.tokens.to(x.dtype).expand(x.shape[0], -1, -1)
            return (torch.cat([x[:, :1], prompts, x[:, 1:]], dim=1), *args[1:]), kwargs

        def leave(_module, _args, output):
            x = output[0] if isinstance(output, tuple) else output
            kept = [x[:, 1:1 + n]] if self.keep else []  # after the patches: their positions stay put
            x = torch.cat([x[:, :1], x[:, 1 + n:], *kept], dim=1)
            return (x, *output[1:]) if isinstance(output, tuple) else x

        handles = [blocks[0].register_forward_pre_hook(join, with_kwargs=True),
                   blocks[-1].register_forward_hook(leave)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
