"""PIN (paper Sec. 4.1) as a method: the positional insert added to the patch features."""
from __future__ import annotations

from pathlib import Path

import torch

from pin.insert import InsertConfig, PositionalInsert
from pin.methods.base import Method


class PinMethod(Method):
    """Wraps a :class:`~pin.insert.PositionalInsert`; saved in the insert's own format (so
    ``models/pin`` folders written before the baselines existed still load)."""

    name = "pin"

    def __init__(self, insert: PositionalInsert):
        super().__init__()
        self.insert = insert

    @classmethod
    def build(cls, vlm, **config) -> "PinMethod":
        return cls(PositionalInsert(InsertConfig.for_site(vlm.site, **config)))

    @classmethod
    def from_params(cls, vlm, pin_p, baselines_p) -> "PinMethod":
        hidden = tuple(pin_p.hidden) if pin_p.hidden else None
        return cls.build(vlm, layers=pin_p.layers, table=pin_p.table, layout=pin_p.layout, hidden=hidden)

    def conditioning(self) -> dict[str, torch.Tensor]:
        return {"insert": self.insert()}

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return self.insert.state_dict()

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.insert.load_state_dict(state, strict=True)

    def config(self) -> dict:
        # the insert's own sizes; n_positions, width and has_cls come from the VLM (build)
        site_keys = ("n_positions", "width", "has_cls")
        return {k: v for k, v in self.insert.config.to_dict().items() if k not in site_keys}

    def save_pretrained(self, folder: str | Path, grid: int | None = None) -> None:
        self.insert.save_pretrained(folder, grid=grid)
