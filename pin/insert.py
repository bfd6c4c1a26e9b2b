"""The positional insert pi = psi(S) (paper Sec. 4.1, Eq. 1-3).

S is a fixed 1D sinusoidal table over the vision patch positions (d=64), or a learned table
(App. B.2). psi is a shallow MLP ending in a Linear to the vision width; pi (n_positions, width)
is added to every image's patch features before the fusion network. Two layouts of psi:

- ``swiglu`` (the paper's text): each hidden layer is FC -> LayerNorm -> SwiGLU. The FC maps to
  2h, the LayerNorm normalises the 2h, and SwiGLU gates one half with the SiLU of the other
  (``a * silu(b)``), giving h features.
- ``authors`` (their released code): each hidden layer is Linear -> SiLU -> LayerNorm, widths
  64 -> 512 -> 768 -> width; needed to load their checkpoint ``PINs/PIN_OF.pt``.
"""
from __future__ import annotations

import math
import pickle
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from pin.errors import PinError
from pin.saved import CONFIG_FILE, WEIGHTS_FILE, read_method, read_weights, write_method

# Default hidden widths per layout; a config with L layers takes the first L.
# authors: their code's 64->512->768 (2 layers), extended by 1024 for a third. With width 1024 and
#   256 positions this gives 0.56M / 1.22M / 2.27M params for 1/2/3 layers: exactly the paper's
#   "0.6M / 1.2M / 2.3M" (App. B.1), so the paper's counts were measured on this layout.
# swiglu: an FC -> LN -> SwiGLU layer of output width h costs about twice an authors' layer of
#   width h (the FC maps to 2h), so the widths are narrower: 512, 512, 768 gives
#   0.59M / 1.12M / 2.17M (within 7% of the paper's counts) and keeps 512 -> 512 -> 768 growing
#   like the authors' widths.
DEFAULT_HIDDEN: dict[str, tuple[int, ...]] = {
    "swiglu": (512, 512, 768),
    "authors": (512, 768, 1024),
}

# The last Linear starts at this fraction of PyTorch's default init (bias 0), so a fresh insert
# changes the frozen VLM's input by about 1% of a LayerNorm'ed feature: training starts from the
# VLM's own behaviour, and Adam's scale-free steps grow the output as fast as the loss asks.
# 1.0 reproduces the authors' (default) init.
DEFAULT_OUT_INIT = 0.01


@dataclass(frozen=True)
class InsertConfig:
    n_positions: int  # patch tokens, CLS included when has_cls (BLIP-2 ViT-g/14 at 224: 257)
    width: int  # vision width: 1024 (OpenFlamingo ViT-L/14), 1408 (BLIP-2 ViT-g/14)
    layers: int = 2  # hidden layers in psi (paper: 2; ablation 1..3)
    hidden: tuple[int, ...] | None = None  # hidden widths; None: DEFAULT_HIDDEN[layout][:layers]
    table: Literal["sinusoidal", "learned"] = "sinusoidal"
    layout: Literal["swiglu", "authors"] = "swiglu"
    d_table: int = 64
    has_cls: bool = False  # position 0 is the CLS token; the 1D table simply covers it
    out_init: float = DEFAULT_OUT_INIT

    def __post_init__(self):
        def bad(msg):
            raise ValueError(f"InsertConfig: {msg}")

        for name in ("n_positions", "width", "d_table"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.table not in ("sinusoidal", "learned"):
            bad(f"table must be 'sinusoidal' or 'learned', got {self.table!r}")
        if self.layout not in DEFAULT_HIDDEN:
            bad(f"layout must be one of {sorted(DEFAULT_HIDDEN)}, got {self.layout!r}")
        if not isinstance(self.layers, int) or self.layers < 0:
            bad(f"layers must be an int >= 0, got {self.layers!r}")
        hidden = self.hidden
        if hidden is None:
            default = DEFAULT_HIDDEN[self.layout]
            if self.layers > len(default):
                bad(f"no default hidden widths for {self.layers} layers: give hidden explicitly")
            hidden = default[: self.layers]
        hidden = tuple(int(h) for h in hidden)
        if len(hidden) != self.layers or any(h < 1 for h in hidden):
            bad(f"hidden must hold {self.layers} positive widths, got {self.hidden!r}")
        object.__setattr__(self, "hidden", hidden)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "InsertConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"InsertConfig: unknown keys {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def for_site(cls, site, **overrides) -> "InsertConfig":
        """A config matching a VLM's ``InsertSite`` (n_positions, width, has_cls)."""
        return cls(n_positions=site.n_positions, width=site.width, has_cls=site.has_cls, **overrides)


def sinusoid_table(n_positions: int, d: int) -> torch.Tensor:
    """Eq. 1-2: S[i, 2k] = sin(i / 10000^(2k/d)), S[i, 2k+1] = cos(i / 10000^(2k/d)); (n, d)."""
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]
    j = torch.arange(d)
    angle = pos / torch.pow(10000.0, (2 * (j // 2)).double() / d)[None, :]
    table = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()


class SwiGLULayer(nn.Module):
    """FC -> LayerNorm -> SwiGLU: d_in -> 2h -> h (paper Sec. 5 'Implementation details')."""

    def __init__(self, d_in: int, h: int):
        super().__init__()
        self.fc = nn.Linear(d_in, 2 * h)
        self.norm = nn.LayerNorm(2 * h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.norm(self.fc(x)).chunk(2, dim=-1)
        return F.silu(gate) * value


def build_psi(cfg: InsertConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = cfg.d_table
    for h in cfg.hidden:
        if cfg.layout == "swiglu":
            layers.append(SwiGLULayer(d, h))
        else:  # authors: Linear -> SiLU -> LayerNorm, so indices match their "MLP.<i>" keys
            layers += [nn.Linear(d, h), nn.SiLU(), nn.LayerNorm(h)]
        d = h
    layers.append(nn.Linear(d, cfg.width))
    return nn.Sequential(*layers)


class PositionalInsert(nn.Module):
    """pi = psi(S): an input-independent (n_positions, width) tensor added to the patch features."""

    def __init__(self, config: InsertConfig):
        super().__init__()
        self.config = config
        if config.table == "sinusoidal":
            self.register_buffer("table", sinusoid_table(config.n_positions, config.d_table))
        else:
            # learned S: uniform(+-sqrt(2 / (n + d))), the init of the authors' learned variant
            bound = math.sqrt(2.0 / (config.n_positions + config.d_table))
            self.table = nn.Parameter(torch.empty(config.n_positions, config.d_table).uniform_(-bound, bound))
        self.mlp = build_psi(config)
        last = self.mlp[-1]
        with torch.no_grad():
            last.weight.mul_(config.out_init)
            last.bias.zero_()

    def forward(self) -> torch.Tensor:
        """(n_positions, width); broadcast-add it to features of shape (B, n_positions, width)."""
        return self.mlp(self.table)

    @property
    def n_trainable_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ---- files ------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path, grid: int | None = None) -> None:
        """Save as method ``pin`` in the one folder format of :mod:`pin.saved`; ``grid``: the box
        grid the insert was trained to answer on, recorded with it."""
        write_method(folder, "pin", self.config.to_dict(), self.state_dict(), grid)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "PositionalInsert":
        """An insert saved by ``save_pretrained`` (or in the older ``{"pin_insert": ...}`` format)."""
        folder = Path(folder)
        if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
            raise PinError(f"{folder}: not a saved PositionalInsert (no {CONFIG_FILE} and {WEIGHTS_FILE}); "
                           "train one with `dvc repro train`")
        from pin.weights import check_weights_file

        check_weights_file(folder / "model.safetensors")
        try:
            saved = read_method(folder)
            if saved.method != "pin":
                raise ValueError(f"it holds method {saved.method!r}")
            config = InsertConfig.from_dict(saved.config)
            state = read_weights(folder)
        except (PinError, ValueError, TypeError) as err:
            raise PinError(f"{folder}: not a saved PositionalInsert ({err})") from None
        module = cls(config)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise PinError(f"{folder}: weights do not match {CONFIG_FILE}: {err}") from None
        return module


_AUTHORS_KEY = re.compile(r"(?:^|\.)MLP\.(\d+)\.(weight|bias)$")


def load_authors_checkpoint(
    path: str | Path, n_positions: int | None = None, has_cls: bool = False
) -> PositionalInsert:
    """Load the authors' checkpoint (e.g. ``PINs/PIN_OF.pt``) into a ``layout="authors"`` insert.

    Accepts a state dict with ``MLP.<i>.weight|bias`` keys (any prefix, e.g. Lightning's
    ``model.MLP.0.weight`` under ``state_dict``), or their training checkpoints'
    ``{"mlp": {"<i>.weight": ...}, "pos_enc": (1, n, d)}``. Widths come from the shapes.
    ``n_positions`` defaults to the saved ``pos_enc`` rows, else 256 (OpenFlamingo ViT-L/14 at
    224). A saved sinusoidal ``pos_enc`` must match ours; any other is loaded as a learned table."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as err:
        raise PinError(f"{path}: cannot read the authors' PIN checkpoint ({err})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise PinError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")

    mlp: dict[tuple[int, str], torch.Tensor] = {}
    if isinstance(obj.get("mlp"), dict):
        for k, v in obj["mlp"].items():
            m = re.fullmatch(r"(\d+)\.(weight|bias)", k)
            if m:
                mlp[int(m.group(1)), m.group(2)] = v
    for k, v in obj.items():
        m = _AUTHORS_KEY.search(k) if isinstance(k, str) else None
        if m and torch.is_tensor(v):
            mlp[int(m.group(1)), m.group(2)] = v
    if not mlp:
        raise PinError(f"{path}: no 'MLP.<i>.weight' tensors found (keys: {sorted(map(str, obj))[:8]})")

    # Linear layers are the 2-D weights; LayerNorms the 1-D weights in between.
    linear_idx = sorted(i for (i, kind), v in mlp.items() if kind == "weight" and v.ndim == 2)
    if linear_idx != list(range(0, 3 * len(linear_idx) - 2, 3)):
        raise PinError(f"{path}: MLP layer indices {linear_idx} are not the Linear-SiLU-LayerNorm layout")
    dims = [mlp[linear_idx[0], "weight"].shape[1]] + [mlp[i, "weight"].shape[0] for i in linear_idx]
    d_table, hidden, width = dims[0], tuple(dims[1:-1]), dims[-1]

    pos_enc = obj.get("pos_enc")
    if torch.is_tensor(pos_enc):
        pos_enc = pos_enc.reshape(-1, pos_enc.shape[-1]).float()
        n_positions = n_positions or pos_enc.shape[0]
    n_positions = n_positions or 256
    table = "sinusoidal"
    if torch.is_tensor(pos_enc):
        if pos_enc.shape != (n_positions, d_table):
            raise PinError(f"{path}: pos_enc has shape {tuple(pos_enc.shape)}, want ({n_positions}, {d_table})")
        if not torch.allclose(pos_enc, sinusoid_table(n_positions, d_table), atol=1e-5):
            table = "learned"
    cfg = InsertConfig(
        n_positions=n_positions, width=width, layers=len(hidden), hidden=hidden,
        table=table, layout="authors", d_table=d_table, has_cls=has_cls,
    )
    module = PositionalInsert(cfg)
    state = {f"mlp.{i}.{kind}": v for (i, kind), v in mlp.items()}
    if table == "learned":
        state["table"] = pos_enc
    else:
        state["table"] = module.table
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise PinError(f"{path}: weights do not fit the authors' layout: {err}") from None
    return module


__all__ = [
    "DEFAULT_HIDDEN",
    "InsertConfig",
    "PositionalInsert",
    "SwiGLULayer",
    "load_authors_checkpoint",
    "sinusoid_table",
]
