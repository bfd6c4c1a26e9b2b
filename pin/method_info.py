"""What ``pin info`` and ``pin similarity`` read from a saved method folder (any method of
:mod:`pin.methods`), without loading the VLM it was trained with."""
from __future__ import annotations

from pathlib import Path

from pin.errors import PinError
from pin.insert import PositionalInsert
from pin.saved import read_method, read_weights


def describe(folder: str | Path) -> dict:
    """The method, its box grid (None: not recorded), parameter count and config; for PIN also
    the tensor it adds and the patch grid it covers."""
    folder = Path(folder)
    saved = read_method(folder)
    report = {"kind": f"{saved.method} method", "method": saved.method, "path": str(folder), "grid": saved.grid,
              "config": saved.config}
    if saved.method != "pin":  # every saved tensor of a baseline is a trained one
        n = sum(t.numel() for t in read_weights(folder).values())
        return {**report, "parameters": n, "trainable_parameters": n}
    module = PositionalInsert.from_pretrained(folder)
    cfg = module.config
    n_patches = cfg.n_positions - int(cfg.has_cls)
    side = int(round(n_patches ** 0.5))
    return {
        **report,
        "kind": "positional insert",
        "parameters": sum(p.numel() for p in module.parameters()),
        "trainable_parameters": module.n_trainable_params,
        "patch_grid": f"{side}x{side}" + (" + CLS" if cfg.has_cls else "") if side * side == n_patches
        else f"{n_patches} positions",
        "output_shape": [cfg.n_positions, cfg.width],
        "config": cfg.to_dict(),
    }


def insert_of(folder: str | Path) -> PositionalInsert:
    """PIN's insert saved in ``folder``; a one-line refusal for a method that has no positional table."""
    saved = read_method(folder)
    if saved.method != "pin":
        raise PinError(f"{folder}: a {saved.method} method has no positional table (only PIN's insert has one), "
                       "so there is no similarity map to draw")
    return PositionalInsert.from_pretrained(folder)
