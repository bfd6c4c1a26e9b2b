"""The one on-disk format of a trained method (PIN and every baseline of :mod:`pin.methods`).

A folder holds ``model.safetensors`` (the method's trainable tensors) and ``config.json``::

    {"method": "vpt_fusion", "config": {"tokens": 100}, "grid": 8}

``config`` rebuilds the method (for PIN: the whole insert config, so an insert is read without
its VLM); ``grid`` is the box grid it was trained to answer on, absent in folders saved before it
was recorded. PIN folders written before the baselines existed hold ``{"pin_insert": {...}}``
instead; they read as method ``pin``. Both files are written atomically.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save as st_save

from pin.errors import PinError
from pin.io import atomic_write_bytes, atomic_write_json

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_OLD_PIN_KEY = "pin_insert"  # the insert's own format before the baselines existed


@dataclass(frozen=True)
class SavedMethod:
    """What a folder's config.json says: which method, how to rebuild it, the grid it answers on."""

    folder: Path
    method: str
    config: dict
    grid: int | None


def write_method(folder: str | Path, method: str, config: dict, tensors: dict[str, torch.Tensor],
                 grid: int | None = None) -> None:
    """Save a method: its tensors, then the config naming it (each file atomically)."""
    folder = Path(folder)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write_bytes(folder / WEIGHTS_FILE, st_save(tensors))
    info = {"method": method, "config": config, **({} if grid is None else {"grid": grid})}
    atomic_write_json(folder / CONFIG_FILE, info)


def _grid(info: dict) -> int | None:
    grid = info.get("grid")
    return grid if isinstance(grid, int) and not isinstance(grid, bool) and grid > 0 else None


def read_method(folder: str | Path) -> SavedMethod:
    """The method a folder holds (either format); a clear PinError when there is none."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise PinError(f"{folder}: no trained method here (no {CONFIG_FILE}); train one with `dvc repro train`")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise PinError(f"{path}: not readable ({err}); retrain it with `dvc repro train`") from None
    if not isinstance(info, dict):
        raise PinError(f"{path}: not a trained method's config (a JSON object with 'method')")
    if _OLD_PIN_KEY in info:
        name, config = "pin", info[_OLD_PIN_KEY]
    else:
        name, config = info.get("method"), info.get("config", {})
    if not isinstance(name, str) or not isinstance(config, dict):
        raise PinError(f"{path}: not a trained method's config (method {name!r}, config {type(config).__name__})")
    return SavedMethod(folder, name, config, _grid(info))


def read_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """The saved tensors of a method folder (a damaged file is one PinError naming it)."""
    from pin import weights

    return weights.read_weights(Path(folder) / WEIGHTS_FILE)


def saved_grid(folder: str | Path) -> int | None:
    """The box grid a saved method was trained to answer on, or None for a folder saved before
    the grid was recorded (or with no readable config)."""
    try:
        return read_method(folder).grid
    except PinError:
        return None
