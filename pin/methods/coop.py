"""CoOp (Zhou et al. 2022) on the LLM, the paper's strongest CoOp variant (Sec. 5.1): 16 learnable
context embeddings in the language model's input, at the start of the prompt text (right after
the image; after BOS for BLIP-2's OPT). They carry no position of their own beyond the sequence order, which is why the paper
finds CoOp weak at localisation."""
from __future__ import annotations

import torch
from torch import nn

from pin.methods.base import Method


class LlmContext(Method):
    name = "coop_llm"

    def __init__(self, vlm, tokens: int = 16):
        super().__init__()
        table = vlm.lm_input_embeddings.weight
        # CoOp draws its context from N(0, 0.02^2), the scale of CLIP's token embeddings; the
        # LM's own embedding scale plays that role for any LM.
        std = float(table.detach().float().std())
        self.context = nn.Parameter(torch.randn(tokens, vlm.lm_width) * std)

    def conditioning(self) -> dict[str, torch.Tensor]:
        return {"lm_prefix": self.context}

    @classmethod
    def from_params(cls, vlm, pin_p, baselines_p) -> "LlmContext":
        return cls(vlm, tokens=baselines_p.coop_tokens)

    def config(self) -> dict:
        return {"tokens": self.context.shape[0]}
