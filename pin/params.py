"""Typed, validated parameters for every section of params.yaml.

Each DVC stage loads only the sections it declares in dvc.yaml, so an unknown key or a value of
the wrong type stops that stage with a message naming the key (``compose.o_max: ...``).
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Collection
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator

from pin.params_file import ParamsError, read_mapping  # noqa: F401 - ParamsError: part of this module's API


from pin.params_base import Section
from pin.params_eval import CocoPaths, EvalParams, EvalPaths, RefCocoPaths, VocPaths  # noqa: F401 - re-exported


class GenerateParams(Section):
    backend: Literal["openmoji", "diffusers", "shapes"] = "shapes"
    category_set: Literal["lvis", "coco", "pvoc"] = "lvis"
    per_category: int = Field(40, ge=1)
    max_categories: int | None = Field(30, ge=1)  # null: every category the backend covers
    image_size: int = Field(64, ge=16)  # shapes/openmoji render size; SD output size (512) on diffusers
    # diffusers backend (paper profile)
    model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # a hub id or a local diffusers folder
    prompt: str = "a photo of a single {name}, white background"
    negative_prompt: str = ""
    steps: int = Field(50, ge=1)
    guidance: float = Field(7.5, ge=0)
    batch_size: int = Field(8, ge=1)
    fp16: bool = True
    matting: Literal["threshold"] = "threshold"
    seed: int = 0


class FilterParams(Section):
    backend: Literal["none", "open_clip"] = "none"
    model: str = "ViT-L-14-quickgelu"  # OpenAI's weights (pretrained: openai) were trained with QuickGELU
    pretrained: str = "openai"
    min_clip: float = 21.0  # X-Paste: keep if score >= min(min_clip, best_of_class - tolerance)
    tolerance: float = 1.0
    min_area: float = Field(0.05, ge=0, le=1)
    max_area: float = Field(0.95, ge=0, le=1)
    min_per_class: int = Field(21, ge=1)  # paper: classes with <= 20 survivors are dropped
    batch_size: int = Field(32, ge=1)

    # corrupt (unreadable, empty) object PNGs are dropped and counted; above this share the stage fails
    max_corrupt: float = Field(0.10, ge=0, le=1)

    @model_validator(mode="after")
    def _area_order(self):
        if self.min_area > self.max_area:
            raise ValueError(f"min_area: must be <= filter.max_area={self.max_area} (got {self.min_area})")
        return self


class ComposeParams(Section):
    backgrounds: str = "white"  # "builtin" (scikit-image photos + textures), "white" (Tab. 6 ablation) or a folder
    image_size: int = Field(224, ge=16)
    grid: int = Field(8, ge=1)
    a_max: int = Field(3, ge=1)
    s_min: list[float] = [0.3, 0.2, 0.1]
    s_max: list[float] = [1.0, 1.0, 1.0]
    o_max: float = Field(0.5, ge=0, le=1)
    referrals: bool = False
    # box labels: pasted (the rectangle an object was pasted into: paper, authors) or visible (its
    # extent left after later pastes cover it, as COCO/VOC/LVIS label objects)
    box: Literal["pasted", "visible"] = "pasted"
    # category names in training prompts (and, read by the evaluate stage, in queries): readable
    # ("bus (vehicle)", the offline mini VLM's vocabulary) or clean ("bus", the authors' names)
    query_names: Literal["readable", "clean"] = "readable"
    # appendix_d: "left dog" or "dog on the left" (50/50) and "middle"; prefix: "left dog" only
    referral_style: Literal["appendix_d", "prefix"] = "appendix_d"
    same_type_prob: float = Field(0.7, ge=0, le=1)
    n_train: int = Field(3000, ge=0)
    n_val: int = Field(200, ge=0)
    n_heldout: int = Field(500, ge=0)
    n_pretrain: int = Field(8000, ge=0)  # mini VLM pretraining images (all categories)
    shard_size: int = Field(1000, ge=1)
    format: Literal["jpeg", "png"] = "jpeg"
    quality: int = Field(90, ge=1, le=100)
    workers: int = Field(2, ge=1)
    seed: int = 0
    # per-object levels for pretrain.slot=appearance: which splits are jittered (pin.synth.appearance)
    appearance: Literal["none", "pretrain", "all"] = "pretrain"
    # background folder: images whose header cannot be read are skipped and counted; above this
    # share the stage fails. Not part of the output's fingerprint (it changes no image).
    max_corrupt: float = Field(0.10, ge=0, le=1, exclude=True)

    @model_validator(mode="after")
    def _consistent(self):
        for key, values in (("s_min", self.s_min), ("s_max", self.s_max)):
            if len(values) < self.a_max:
                raise ValueError(f"{key}: needs one entry per object count up to compose.a_max={self.a_max} "
                                 f"(got {len(values)}: {values})")
        for i, (lo, hi) in enumerate(zip(self.s_min, self.s_max)):
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"s_min[{i}]: need 0 < compose.s_min[{i}] <= compose.s_max[{i}] <= 1 "
                                 f"(got {lo} and {hi})")
        if self.image_size % self.grid:
            raise ValueError(f"grid: must divide compose.image_size={self.image_size} (got {self.grid})")
        for a in range(1, self.a_max + 1):
            lo, hi = self.long_side_cells(a)
            if lo > hi:
                raise ValueError(
                    f"s_min[{a - 1}]: compose.s_min[{a - 1}]={self.s_min[a - 1]} .. compose.s_max[{a - 1}]="
                    f"{self.s_max[a - 1]} contains no multiple of 1/grid (compose.grid={self.grid}): widen "
                    f"the range or use a finer grid")
        return self

    def long_side_cells(self, a: int) -> tuple[int, int]:
        """The allowed longer sides, in grid cells, of an object in an image with ``a`` objects:
        the whole cells inside [s_min, s_max] x grid (1e-9 absorbs float error in the bounds)."""
        import math

        lo = math.ceil(self.s_min[a - 1] * self.grid - 1e-9)
        hi = math.floor(self.s_max[a - 1] * self.grid + 1e-9)
        return max(1, lo), min(self.grid, hi)


class VLMParams(Section):
    name: Literal["mini", "openflamingo", "blip2"] = "mini"
    path: str = "models/mini_vlm"  # mini: the pretrain_vlm stage's output folder
    # paper profile: hub ids or local folders (no hub here: point these at local copies)
    clip_model: str = "ViT-L-14-quickgelu"  # OpenAI's ViT-L/14 was trained with QuickGELU
    clip_pretrained: str = "openai"
    lang_model: str = "anas-awadalla/mpt-1b-redpajama-200b-dolly"
    checkpoint: str = "openflamingo/OpenFlamingo-3B-vitl-mpt1b-langinstruct"
    blip2_model: str = "Salesforce/blip2-opt-2.7b"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Run the vision encoder at this input size, its position embeddings interpolated to the
    # larger patch grid (paper Tab. 3 "Higher resolution"); null: the encoder's own size.
    image_size: int | None = Field(None, ge=8)

    @model_validator(mode="after")
    def _image_size_fits_the_patch(self):
        # Known here for the paper profile (open_clip names carry the patch: ViT-L-14; BLIP-2's
        # ViT-g is /14); the mini VLM's patch is in its own config, checked when it is loaded.
        m = re.match(r"^ViT-[A-Za-z0-9]+-(\d+)(?:-|$)", self.clip_model)
        patch = 14 if self.name == "blip2" else int(m.group(1)) if self.name == "openflamingo" and m else None
        if self.image_size is not None and patch:
            if self.image_size % patch:
                raise ValueError(f"image_size: must be a multiple of the {self.name} vision encoder's patch "
                                 f"size {patch} (got {self.image_size})")
            if self.image_size < 2 * patch:
                raise ValueError(f"image_size: too small: at least 2 patches of {patch} px a side "
                                 f"(got {self.image_size})")
        return self


class InsertParams(Section):
    layers: int = Field(2, ge=0, le=3)
    table: Literal["sinusoidal", "learned"] = "sinusoidal"
    layout: Literal["swiglu", "authors"] = "swiglu"
    hidden: list[int] | None = None

    @field_validator("hidden")
    @classmethod
    def _positive_widths(cls, hidden: list[int] | None) -> list[int] | None:
        if hidden is not None and any(h < 1 for h in hidden):
            raise ValueError(f"every hidden width must be >= 1 (got {hidden})")
        return hidden


class BaselinesParams(Section):
    """Sizes of the paper's baselines (Sec. 5.1); PIN's own are in ``pin``."""

    vpt_tokens: int = Field(100, ge=1)  # VPT on the vision encoder or the fusion network
    # vpt_vision: the prompt tokens' encoder outputs join the fusion input (keep, the authors'
    # code) or are dropped after the last block (drop)
    vpt_vision_output: Literal["keep", "drop"] = "keep"
    coop_tokens: int = Field(16, ge=1)  # CoOp context tokens in the LLM input
    lora_r: int = Field(16, ge=1)
    lora_alpha: float = Field(16.0, gt=0)
    incontext_shots: list[int] = Field([2, 5, 10], min_length=1)  # context images per query
    incontext_repeats: int = Field(10, ge=1)  # context draws per k: mean and std reported

    @field_validator("incontext_shots")
    @classmethod
    def _positive_shots(cls, shots: list[int]) -> list[int]:
        if any(k < 1 for k in shots):
            raise ValueError("every k must be >= 1")
        return shots


class PretrainParams(Section):
    """The offline mini VLM's own pretraining (image-level supervision only)."""

    vision_steps: int = Field(350, ge=0)
    vision_lr: float = Field(3e-3, gt=0)
    lm_steps: int = Field(3000, ge=0)
    lm_lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    image_size: int = Field(64, ge=8)
    patch: int = Field(8, ge=1)
    vision_width: int = Field(128, ge=8)
    vision_layers: int = Field(4, ge=1)
    stem: Literal["patch", "conv"] = "conv"  # conv: early convolutions (needs a power-of-2 patch)
    # OpenFlamingo closes its gates (tanh(0) = 0) to protect a pretrained LM; the mini VLM's LM is
    # trained from scratch together with the fusion, and closed gates keep it blind for hundreds
    # of steps (measured: image-conditioned loss = shuffled-image loss after 1,000 steps).
    gate_init: float = 1.0
    lm_width: int = Field(128, ge=8)
    lm_layers: int = Field(4, ge=2)
    xattn_every: int = Field(2, ge=1)  # gated cross-attention on every n-th LM layer
    latents: int = Field(32, ge=1)  # perceiver latents (OpenFlamingo-3B: 64)
    numbers: Literal["digits", "whole"] = "whole"  # whole: a number up to 224 is one token
    # A mini VLM folder whose ViT is kept (vision pretraining skipped); null: pretrain the ViT.
    vision_from: str | None = None
    lm_batch_size: int | None = Field(None, ge=1)  # None: batch_size
    # Pretraining texts (pin.vlm.pretrain_text): the mix of kinds and where slot boxes sit.
    # The kinds are checked by pin.vlm.pretrain_text, which defines them.
    text_mix: dict[str, float] = Field(default_factory=lambda: {"caption": 0.2, "exists": 0.35, "count": 0.15,
                                                                "slot": 0.3})
    slot: str = "appearance"  # a pin.vlm.pretrain_text.SLOT_STYLES name (research ones: research/slot_styles.py)
    vision_levels: bool = True  # the vision objective also predicts the objects' appearance levels
    device: str = "cpu"  # cpu | cuda | cuda:N | auto (the shipped asset was pretrained on a GPU)
    # train: pretrain here (minutes on a CPU); asset: copy the pretrained weights shipped in the
    # repo (scripts/build_mini_vlm.py made them, the same code on a GPU, longer).
    source: Literal["train", "asset"] = "asset"
    asset: str = "assets/mini_vlm"
    max_images: int | None = Field(None, ge=1)
    seed: int = 0

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", device):
            raise ValueError(f"must be cpu, cuda, cuda:N or auto (got {device!r})")
        return device

    @field_validator("slot")
    @classmethod
    def _registered_slot(cls, slot: str) -> str:
        # The registry is read when a value is validated, so research styles registered by
        # `import research.slot_styles` count. Imported by name: pin.params stays free of the VLM
        # code in the import graph (every stage reads params; only pretrain_vlm, which lists
        # pin/vlm in its deps, validates a pretrain section).
        importlib.import_module("pin.vlm.pretrain_text").slot_style(slot)  # a ValueError naming the registered ones
        return slot

    @model_validator(mode="after")
    def _consistent(self):
        if any(w < 0 for w in self.text_mix.values()) or sum(self.text_mix.values()) <= 0:
            raise ValueError("text_mix: weights must be >= 0 with a positive sum")
        if self.lm_layers < self.xattn_every:
            raise ValueError("xattn_every must be <= lm_layers")
        return self


class TrainParams(Section):
    steps: int = Field(2400, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)  # paper: Adam 1e-3 over ~150k steps
    seed: int = 0
    cache_features: bool = True
    checkpoint_every: int = Field(100, ge=1)
    log_every: int = Field(10, ge=1)
    max_images: int | None = Field(None, ge=1)
    # > 1: the stage runs itself under `accelerate launch` (pin.launch); not in any fingerprint
    processes: int = Field(1, ge=1, exclude=True)
    # cached: the fixed data/composed set and its feature cache; fresh: every sample composed on
    # the fly by `compose_workers` DataLoader processes, the encoder in every step (pin.fresh)
    compose: Literal["cached", "fresh"] = "cached"
    compose_workers: int = Field(2, ge=0, exclude=True)  # changes the speed, not the samples


SECTIONS: dict[str, type[Section]] = {
    "generate": GenerateParams,
    "filter": FilterParams,
    "compose": ComposeParams,
    "eval": EvalParams,
    "vlm": VLMParams,
    "pin": InsertParams,
    "pretrain": PretrainParams,
    "train": TrainParams,
    "baselines": BaselinesParams,
}

S = TypeVar("S", bound=Section)


_KEYED = re.compile(r"^([A-Za-z_][\w\[\]]*): (.*)$", re.S)


def _format_error(section: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in (section, *e["loc"]))
        got = e.get("input")
        if e["type"] == "value_error":  # our validators: "key: message (got ...)"
            msg = str(e.get("ctx", {}).get("error", e["msg"]))
            m = _KEYED.match(msg)
            lines.append(f"{loc}.{m.group(1)}: {m.group(2)}" if m else f"{loc}: {msg}")
            continue
        extra = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{loc}: {extra}{shown}")
    return "; ".join(lines)


def parse_section(section: str, raw: object, cls: type[S] | None = None) -> S:
    cls = cls or SECTIONS[section]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{section}: expected a mapping, got {type(raw).__name__}")
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_format_error(section, err)) from None


def parse_method(raw: dict, known: Collection[str]) -> str:
    """The top-level ``method`` of a params mapping (default ``pin``), one of ``known``: the
    caller passes ``pin.methods.METHODS``, the one registry (params imports no model code, so
    every stage that reads params does not depend on it). Errors name the key."""
    value = raw.get("method", "pin")
    if not isinstance(value, str) or value not in known:
        raise ParamsError(f"method: must be one of {', '.join(known)} (got {value!r})")
    return value


# Top-level keys of params.yaml besides the sections: DVC refuses a file with others, and so do we
# (a misspelled section, `trian:`, would otherwise run on defaults).
TOP_LEVEL = ("method", "threads", "profile")
DEFAULT_THREADS = 2  # params.yaml `threads`: what the committed metrics were made with


def parse_threads(raw: dict) -> int:
    """The top-level ``threads`` of a params mapping (default 2): the CPU threads every stage
    computes with, whatever the core count and OMP_NUM_THREADS (:func:`pin.stage.apply_threads`)."""
    value = raw.get("threads", DEFAULT_THREADS)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParamsError(f"threads: must be a whole number >= 1 (got {value!r})")
    return value


def load_yaml(path: str | Path = "params.yaml") -> dict:
    """params.yaml as a mapping (:func:`pin.params_file.read_mapping`: file-level checks) whose
    top-level keys are all known sections (or ``method``)."""
    data = read_mapping(path)
    unknown = [k for k in data if k not in SECTIONS and k not in TOP_LEVEL]
    if unknown:
        import difflib

        known = sorted((*SECTIONS, *TOP_LEVEL))
        hints = [f"{k!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(str(k), known, 1))
                             else "") for k in unknown]
        raise ParamsError(f"{Path(path)}: unknown top-level section {', '.join(hints)}; known: {', '.join(known)}")
    from pin.profiles import ProfileError, apply_profile

    try:
        return apply_profile(data, Path(path).parent, SECTIONS)
    except ProfileError as err:
        raise ParamsError(str(err)) from None


def load(section: str, path: str | Path = "params.yaml", cls: type[S] | None = None) -> S:
    """Load and validate one section of params.yaml."""
    return parse_section(section, load_yaml(path).get(section), cls)
