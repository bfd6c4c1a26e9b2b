"""Read an OpenFlamingo checkpoint into a built Flamingo and judge whether it was complete.

The released ``checkpoint.pt`` holds only what open_flamingo trained (its trainer saves the
trainable parameters and the input embeddings, and drops the vision encoder and the alias
names): ``perceiver.*``, ``lang_encoder.<decoder layers>.N.gated_cross_attn_layer.*`` and the LM's
input embedding, sometimes ``module.``-prefixed (DDP) and sometimes wrapped in
``{"model_state_dict": ...}`` (a training checkpoint). Older files hold the full ``state_dict()``.

The Flamingo mixin registers every cross-attention block twice (inside each decoder layer and in
``lang_encoder.gated_cross_attn_layers``), and ``load_state_dict`` reports the alias it was not
given as missing although the tensor behind it was filled. Completeness is therefore judged by
tensor identity: a fusion tensor counts as loaded when *any* of its names was in the file.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch

from pin.errors import PinError

log = logging.getLogger(__name__)

WRAPPER_KEY = "model_state_dict"  # open_flamingo's training checkpoints nest the weights here
DDP_PREFIX = "module."


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pt``/``.bin`` or ``.safetensors`` checkpoint, unwrapped from
    ``model_state_dict`` and without a ``module.`` prefix."""
    from pin.weights import read_weights

    state = read_weights(path)
    if isinstance(state, dict) and WRAPPER_KEY in state:
        state = state[WRAPPER_KEY]
    if not isinstance(state, dict):
        raise PinError(f"{path}: not a state dict (a {type(state).__name__}); expected a mapping of names to tensors")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise PinError(f"{path}: {len(bad)} entries are not tensors, e.g. {bad[:3]}; expected a state dict "
                       f"(optionally under '{WRAPPER_KEY}')")
    return {k.removeprefix(DDP_PREFIX): v for k, v in state.items()}


def is_fusion_name(name: str) -> bool:
    """The weights OpenFlamingo trained on top of the frozen encoder and LM."""
    return name.startswith("perceiver.") or "gated_cross_attn" in name


def not_loaded(model: torch.nn.Module, loaded_names: Iterable[str], wanted=is_fusion_name) -> list[str]:
    """Names (the first of each shared tensor) of the tensors selected by ``wanted`` that no name
    in ``loaded_names`` reaches. ``state_dict(keep_vars=True)`` lists every alias of a shared
    Parameter with the same object, so ``id`` identifies the tensor behind the names."""
    tensors = model.state_dict(keep_vars=True)
    loaded = {id(tensors[k]) for k in loaded_names if k in tensors}
    absent: dict[int, str] = {}
    for name, t in tensors.items():
        if wanted(name) and id(t) not in loaded:
            absent.setdefault(id(t), name)
    return list(absent.values())


def load_checkpoint(flamingo: torch.nn.Module, path: Path) -> None:
    """Load ``path`` into ``flamingo`` (not strict: the frozen encoder and LM come from their own
    folders). Refuses unknown names, wrong shapes and absent perceiver / cross-attention weights."""
    state = read_state_dict(path)
    try:
        _, unexpected = flamingo.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches are raised even when not strict
        raise PinError(f"{path}: does not fit this model: {str(err).strip()[:500]}") from None
    if unexpected:
        raise PinError(f"{path}: {len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
    fusion_missing = not_loaded(flamingo, state)
    if fusion_missing:
        raise PinError(
            f"{path}: not an OpenFlamingo checkpoint for this model: "
            f"{len(fusion_missing)} fusion weights missing, e.g. {fusion_missing[:3]}"
        )
    embedding = flamingo.lang_encoder.get_input_embeddings().weight
    tensors = flamingo.state_dict(keep_vars=True)
    if not any(tensors.get(k) is embedding for k in state):
        # the factory added the <image> and <|endofchunk|> rows with a random init
        log.warning("%s: holds no LM input embedding; the <image> / <|endofchunk|> token embeddings "
                    "keep their random initialisation", path)
