"""LoRA (Hu et al. 2022) on the vision encoder, the paper's strongest PEFT baseline (Sec. 5.1):
rank ``r`` = 16, ``alpha`` = 16 on the encoder's attention (q/k/v) and MLP layers, injected with
``peft`` into the adapter's ``vision_encoder`` at the places its ``lora_targets`` names.

peft keeps the frozen weights as they are (``base_layer``; a wrapped parameter is reparametrised
as W + BA on access, never written) and B starts at zero, so an untrained LoRA is the frozen
encoder exactly. The adapters are switched on only inside ``vision()``: outside it (the raw
VLM, the other rows of an evaluation) the encoder is the frozen one.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from pin.methods.base import Method


def _lora_layers(module: nn.Module) -> list[nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


class LoraVision(Method):
    name = "lora_vision"
    encodes_pixels = True

    def __init__(self, vlm, r: int = 16, alpha: int = 16):
        super().__init__()
        from peft import LoraConfig, inject_adapter_in_model

        encoder = vlm.vision_encoder
        if _lora_layers(encoder):
            raise ValueError("the vision encoder already holds LoRA layers (one LoRA per loaded VLM)")
        self.r, self.alpha = r, alpha
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, bias="none", **vlm.lora_targets)
        inject_adapter_in_model(config, encoder)
        self._layers = _lora_layers(encoder)
        # The LoRA weights live inside the encoder; the method holds the same Parameter objects
        # (not the encoder itself, whose train/eval mode and frozen weights are not ours).
        named = dict(encoder.named_parameters())
        self.names = sorted(n for n in named if ".lora_" in n)
        if not self.names:
            raise ValueError(f"LoRA targets {vlm.lora_targets} matched nothing in the vision encoder")
        self.weights = nn.ParameterList([named[n] for n in self.names])
        self._enable(False)

    def _enable(self, on: bool) -> None:
        for layer in self._layers:
            layer.enable_adapters(on)
        # peft also sets the LoRA weights' requires_grad to `on`; a weight switched off after a
        # forward pass inside vision() would then get no gradient from the backward pass after it
        for p in self.weights:
            p.requires_grad_(True)

    @contextlib.contextmanager
    def vision(self, vlm) -> Iterator[None]:
        self._enable(True)
        try:
            yield
        finally:
            self._enable(False)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in zip(self.names, self.weights)}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        if sorted(state) != self.names:
            missing, extra = set(self.names) - set(state), set(state) - set(self.names)
            raise ValueError(f"LoRA weights do not match: missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}")
        with torch.no_grad():
            for n, p in zip(self.names, self.weights):
                p.copy_(state[n])

    @classmethod
    def from_params(cls, vlm, pin_p, baselines_p) -> "LoraVision":
        return cls(vlm, r=baselines_p.lora_r, alpha=baselines_p.lora_alpha)

    def config(self) -> dict:
        return {"r": self.r, "alpha": self.alpha}
