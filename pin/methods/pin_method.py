"""PIN (paper Sec. 4.1) as a method: the positional insert added to the patch features."""
from __future__ import annotations

import torch

from pin.errors import PinError
from pin.insert import InsertConfig, PositionalInsert
from pin.methods.base import Method


SITE_KEYS = ("n_positions", "width", "has_cls")  # set by the VLM, saved so an insert reads without it


class PinMethod(Method):
    """Wraps a :class:`~pin.insert.PositionalInsert`; its config is the insert's whole config, so
    the saved folder is also what ``PositionalInsert.from_pretrained`` reads."""

    name = "pin"

    def __init__(self, insert: PositionalInsert):
        super().__init__()
        self.insert = insert

    @classmethod
    def build(cls, vlm, **config) -> "PinMethod":
        site = vlm.site
        saved = {k: config.pop(k) for k in SITE_KEYS if k in config}
        if any(saved[k] != getattr(site, k) for k in saved):
            raise PinError(
                f"this insert was trained for {saved.get('n_positions')} positions of width {saved.get('width')}, "
                f"but the {getattr(vlm, 'name', '')} VLM has {site.n_positions} x {site.width}: use the insert "
                "trained with this VLM")
        return cls(PositionalInsert(InsertConfig.for_site(site, **config)))

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
        return self.insert.config.to_dict()
