"""What every method of the comparison (PIN and the paper's baselines) offers training and evaluation.

A method adapts the frozen VLM without changing a VLM weight, at one or more of the adapter's
extension points (:mod:`pin.vlm.base`):

* ``conditioning()``: keyword arguments for ``FrozenVLM.answer_loss`` / ``generate``
  (``insert``: PIN; ``fusion_tokens``: VPT on the fusion network; ``lm_prefix``: CoOp);
* ``vision(vlm)``: a context inside which the VLM's vision encoder runs with the method's
  changes (VPT tokens in the ViT sequence, LoRA); such a method sets ``encodes_pixels`` and is
  trained with the encoder in the graph instead of on cached features.

Methods that are evaluated as they are (``raw``, ``random``, ``incontext``) set ``trains = False``.
A trained method is saved in the one folder format of :mod:`pin.saved` (``model.safetensors``
with its trainable tensors, ``config.json`` with ``{"method": name, "config": {...}, "grid": G}``)
and read back by :func:`pin.methods.load_method`. A new method is a
subclass with a ``name`` and a ``from_params``, listed in ``pin.methods.METHODS``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from pin.saved import write_method


class Method(nn.Module):
    name: ClassVar[str]
    trains: ClassVar[bool] = True
    encodes_pixels: ClassVar[bool] = False  # changes the vision encoder: no feature cache

    # ---- the forward pass -------------------------------------------------------------------
    def conditioning(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for ``FrozenVLM.answer_loss`` / ``generate``."""
        return {}

    def forward(self) -> dict[str, torch.Tensor]:
        # the training loop calls the (possibly DDP-wrapped) module, so this is conditioning()
        return self.conditioning()

    @contextlib.contextmanager
    def vision(self, vlm) -> Iterator[None]:
        """Inside the block the VLM's vision encoder runs with this method's changes."""
        yield

    def features(self, vlm, pixels: torch.Tensor) -> torch.Tensor:
        """The vision encoder's tokens for ``pixels`` with this method's changes, with autograd."""
        with self.vision(vlm):
            return vlm.vision_tokens(pixels)

    # ---- what trains --------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def n_trainable_params(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Everything needed to restore the trained method (saved, checkpointed)."""
        return self.state_dict()

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(state, strict=True)

    # ---- files --------------------------------------------------------------------------------
    def config(self) -> dict:
        """JSON-able keyword arguments that rebuild this method (``cls.build(vlm, **config)``)."""
        return {}

    @classmethod
    def build(cls, vlm, **config) -> "Method":
        return cls(vlm, **config)

    @classmethod
    def from_params(cls, vlm, pin_p, baselines_p) -> "Method":
        """A fresh method for ``vlm`` sized by the ``pin`` and ``baselines`` params sections (any
        objects with their fields): the one place a method reads params. Call
        ``torch.manual_seed`` first for a fixed init."""
        return cls.build(vlm)

    def save_pretrained(self, folder: str | Path, grid: int | None = None) -> None:
        """Write the trainable tensors and ``config.json``; ``grid``: the box grid the method was
        trained to answer on, recorded so that a user of the folder need not guess it."""
        write_method(folder, self.name, self.config(), self.trainable_state(), grid)


def xavier_tokens(n: int, width: int) -> nn.Parameter:
    """``n`` prompt tokens drawn uniformly from +-sqrt(6 / (width + width)): VPT's Xavier-uniform
    init (Jia et al. 2022), with the width standing in for the patch embedding's fan-in."""
    bound = (6.0 / (2 * width)) ** 0.5
    return nn.Parameter(torch.empty(n, width).uniform_(-bound, bound))
