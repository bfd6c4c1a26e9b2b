"""The one small interface every frozen VLM offers to training and evaluation.

A method (PIN, and later the baselines) touches the VLM at one place: the patch features after
the frozen vision encoder and before the fusion network (OpenFlamingo's perceiver, BLIP-2's
Q-Former, the mini VLM's connector). ``patch_features`` computes them (no grad, cacheable:
the encoder is frozen), the other calls take them back with an optional additive insert.
"""
from __future__ import annotations

import re
import unicodedata
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from PIL import Image


@dataclass(frozen=True)
class InsertSite:
    """Where the insert is added: ``n_positions`` tokens of width ``width`` (CLS included if any)."""

    n_positions: int
    width: int
    grid: int  # PATCH grid side (n_positions == grid*grid (+1 when has_cls)); the box grid may differ
    has_cls: bool = False


class FrozenVLM(ABC):
    """Adapter around a frozen caption-based VLM. Every VLM weight has requires_grad=False."""

    name: str
    site: InsertSite
    prompt_template: str  # e.g. "<image>In the image is a {obj} located at"
    answer_end: str  # appended to the box text when teacher forcing, e.g. "<|endofchunk|>"

    @abstractmethod
    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """PIL images -> pixel tensor (B, C, H, W) in the encoder's own resolution/normalisation."""

    @abstractmethod
    def patch_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Frozen vision encoder output (B, n_positions, width), computed without grad."""

    @abstractmethod
    def answer_loss(
        self,
        features: torch.Tensor,
        prompts: list[str],
        answers: list[str],
        insert: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean next-token cross-entropy over the answer tokens only (prompt masked, end token
        included), with ``features + insert`` (added in fp32) fed to the fusion network.

        ``answers`` are bare box texts (" [14,28,112,98]"); the adapter appends ``answer_end``.
        Gradients flow to ``insert`` only."""

    @abstractmethod
    def generate(
        self,
        features: torch.Tensor,
        prompts: list[str],
        insert: torch.Tensor | None = None,
        max_new_tokens: int = 24,
        num_beams: int = 1,
    ) -> list[str]:
        """Batched decoding (KV cache), stopping at the end token; returns only the new text.
        Callers pass ``max_new_tokens`` from the box codec's longest answer."""

    def prompt(self, obj: str) -> str:
        return self.prompt_template.format(obj=plain_text(obj))

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")


_MARKUP = re.compile(r"<[^<>\s]*>")


def plain_text(text: str) -> str:
    """An object name or referral as plain words for a prompt: control characters and lone
    surrogates become spaces, whitespace runs one space, and anything shaped like a special token
    (``<image>``, ``<|endofchunk|>``, ``</s>``) loses its angle brackets, so a dataset's text can
    never add a media or end token. Ordinary names pass unchanged."""
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Cs") else ch for ch in str(text))
    text = _MARKUP.sub(lambda m: "(" + m.group(0)[1:-1] + ")", text)
    return " ".join(text.split())


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Eval mode and no gradients: the VLM stays bit-identical while an insert trains."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
