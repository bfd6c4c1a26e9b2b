"""A tiny OpenFlamingo written to disk in the formats the paper profile reads (test helper).

* ``clip/``: an open_clip model config (registered with ``add_model_config``) and
  ``clip/weights.pt``, an open_clip checkpoint file for it (so the vision tower is not random);
* ``lm/``: a 2-layer Llama ``save_pretrained`` folder holding the tokenizer too;
* the Flamingo itself, built by open_flamingo's own factory, returned with the factory's
  ``requires_grad`` flags intact (what :func:`released_state_dict` keys on).
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import open_clip
import open_flamingo
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pin.vlm.openflamingo import set_gates
from pin.vlm.tokenizer import build_word_tokenizer, save_tokenizer

CLIP_NAME = "pin-test-ckpt-vit"
OBJECTS = ["car", "dog", "red apple", "traffic light"]
CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


def write_clip(root: Path) -> Path:
    """Register the tiny open_clip config and write a weights file for it; returns the file."""
    (root / "clip").mkdir(parents=True, exist_ok=True)
    (root / "clip" / f"{CLIP_NAME}.json").write_text(json.dumps(CLIP_CFG))
    open_clip.add_model_config(root / "clip")
    torch.manual_seed(1)
    weights = root / "clip" / "weights.pt"
    torch.save(open_clip.create_model(CLIP_NAME).state_dict(), weights)
    return weights


def write_llama(lm_dir: Path) -> None:
    tok = build_word_tokenizer(OBJECTS)
    save_tokenizer(tok, lm_dir)
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
        tie_word_embeddings=True, initializer_range=0.02,
    ))
    lm.save_pretrained(lm_dir)


def build_flamingo(lm_dir: Path, clip_weights: Path | str = "", seed: int = 0):
    """open_flamingo's factory on the local files, gates opened (a fresh Flamingo's are shut).
    A mosaic_gpt folder (MPT-1B's format) is built by our native MPT, as the adapter does."""
    mosaic = json.loads((Path(lm_dir) / "config.json").read_text()).get("model_type") == "mosaic_gpt"
    if mosaic:
        from pin.vlm.mpt import register_mosaic_gpt

        register_mosaic_gpt()
    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        flamingo, _, _ = open_flamingo.create_model_and_transforms(
            CLIP_NAME, str(clip_weights), str(lm_dir), str(lm_dir), use_local_files=True,
            decoder_layers_attr_name="transformer.blocks" if mosaic else None,
        )
    set_gates(flamingo, 1.0)
    return flamingo


# what open_flamingo's trainer leaves out besides the frozen weights: the encoder and two aliases
_DROPPED = ("lang_encoder.old_decoder_blocks", "lang_encoder.gated_cross_attn_layers", "vision_encoder")


def released_state_dict(flamingo: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The released ``checkpoint.pt`` format, by the rule open_flamingo 2.0.1 saves with
    (``train_utils.filter_state_dict_to_trainable``): from ``state_dict()``, drop each frozen
    parameter under the first name ``named_parameters()`` gives it, except names with "embed";
    then drop every name under the vision encoder and the two alias module lists."""
    state = flamingo.state_dict()
    for name, p in flamingo.named_parameters():
        if "embed" not in name and not p.requires_grad:
            state.pop(name, None)
    return {k: v for k, v in state.items() if not any(d in k for d in _DROPPED)}
