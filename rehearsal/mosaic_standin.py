"""A tiny random-weight MPT-1B ("mosaic_gpt") language-model folder in the released on-disk format.

What ``anas-awadalla/mpt-1b-redpajama-200b-dolly`` holds, shrunk: ``config.json`` with the mosaic
fields (``model_type: mosaic_gpt``, ``architectures``, an ``auto_map`` naming the remote-code
modules), ``pytorch_model.bin`` (a ``torch.save`` state dict with mosaic key names and no
``.bias`` keys), the two remote-code files and a tokenizer saved by transformers'
``GPTNeoXTokenizer`` (byte-level BPE, ``<|endoftext|>`` as bos/eos/unk, ``<|padding|>``), to which
open_flamingo's factory adds ``<|endofchunk|>`` and ``<image>`` itself, as with the real one.

The remote-code files are stubs: importing them writes a ``REMOTE_CODE_RAN`` sentinel next to
them and raises, so a test can prove they never ran (:mod:`pin.vlm.mpt` loads the folder).
Callers must name the folder with ``mpt-1b-redpajama-200b`` in it (open_flamingo keys its MPT
fix on that string).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

SENTINEL = "REMOTE_CODE_RAN"
EOT = "<|endoftext|>"
PADDING = "<|padding|>"
REMOTE_CONFIG_MODULE = "configuration_mosaic_gpt"
REMOTE_MODEL_MODULE = "mosaic_gpt"

_STUB = '''"""Stand-in for mosaic_gpt remote code: must never be imported."""
from pathlib import Path

Path({sentinel!r}).write_text(__name__)
raise RuntimeError("remote code of the mosaic_gpt stand-in was imported")
'''


def mosaic_config(d_model: int, n_heads: int, n_layers: int, vocab_size: int) -> dict:
    """``config.json`` of the released MPT-1B with the sizes replaced."""
    return {
        "architectures": ["MosaicGPT"],
        "auto_map": {
            "AutoConfig": f"{REMOTE_CONFIG_MODULE}.MosaicGPTConfig",
            "AutoModelForCausalLM": f"{REMOTE_MODEL_MODULE}.MosaicGPT",
        },
        "model_type": "mosaic_gpt",
        "d_model": d_model,
        "n_heads": n_heads,
        "n_layers": n_layers,
        "mlp_ratio": 4,
        "max_seq_len": 2048,
        "vocab_size": vocab_size,
        "attn_pdrop": 0.0,
        "resid_pdrop": 0.0,
        "emb_pdrop": 0.0,
        "attn_impl": "torch",
        "attn_qk_ln": True,
        "attn_clip_qkv": None,
        "softmax_scale": None,
        "prefix_lm": False,
        "attn_uses_sequence_id": False,
        "alibi": True,
        "alibi_bias_max": 8,
        "init_device": "cpu",
        "logit_scale": None,
        "no_bias": True,
        "verbose": 0,
        "param_init_fn": "kaiming_normal_",
        "init_div_is_residual": True,
        "init_std": 0.02,
        "emb_init_std": None,
        "emb_init_uniform_lim": None,
        "init_gain": 0,
        "fan_mode": "fan_in",
        "init_nonlinearity": "relu",
        "embedding_fraction": 1.0,
        "low_precision_layernorm": True,
        "use_cache": False,
        "torch_dtype": "float32",
        "transformers_version": "4.27.4",
    }


def mosaic_state_dict(d_model: int, n_layers: int, vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under mosaic_gpt's key names. LayerNorm weights are drawn from [0.5, 1.5]
    (never all ones), so every LayerNorm, q_ln and k_ln included, changes the output."""
    g = torch.Generator().manual_seed(seed)

    def linear(out_f: int, in_f: int) -> torch.Tensor:
        return torch.randn(out_f, in_f, generator=g) / in_f**0.5

    def norm() -> torch.Tensor:
        return 0.5 + torch.rand(d_model, generator=g)

    state = {"transformer.wte.weight": 0.5 * torch.randn(vocab_size, d_model, generator=g)}
    for i in range(n_layers):
        p = f"transformer.blocks.{i}."
        state[p + "ln_1.weight"] = norm()
        state[p + "attn.Wqkv.weight"] = linear(3 * d_model, d_model)
        state[p + "attn.q_ln.weight"] = norm()
        state[p + "attn.k_ln.weight"] = norm()
        state[p + "attn.out_proj.weight"] = linear(d_model, d_model)
        state[p + "ln_2.weight"] = norm()
        state[p + "mlp.mlp_up.weight"] = linear(4 * d_model, d_model)
        state[p + "mlp.mlp_down.weight"] = linear(d_model, 4 * d_model)
    state["transformer.ln_f.weight"] = norm()
    return state


def neox_style_tokenizer():
    """transformers' own ``GPTNeoXTokenizer`` (byte-level BPE) over a tiny vocabulary: ids 0
    ``<|endoftext|>`` and 1 ``<|padding|>`` as in GPT-NeoX-20B, then the 256 byte symbols and no
    merges, so it is lossless on any text, just one token per byte."""
    from tokenizers import pre_tokenizers
    from transformers import GPTNeoXTokenizer

    vocab = {EOT: 0, PADDING: 1}
    for symbol in pre_tokenizers.ByteLevel.alphabet():
        vocab.setdefault(symbol, len(vocab))
    return GPTNeoXTokenizer(vocab=vocab, merges=[], clean_up_tokenization_spaces=False)


def write_tiny_mosaic_gpt(
    folder: str | Path,
    *,
    d_model: int = 64,
    n_heads: int = 4,
    n_layers: int = 2,
    vocab_size: int | None = None,
    seed: int = 0,
) -> Path:
    """Write the tiny LM folder (created if needed) and return its path.

    ``vocab_size`` defaults to the tokenizer's length plus open_flamingo's three added tokens,
    rounded up to a multiple of 64: larger than the final vocabulary, as the real 50432-row
    embedding is (open_flamingo's factory resizes it to ``len(tokenizer)``)."""
    folder = Path(folder)
    if "mpt-1b-redpajama-200b" not in str(folder):
        raise ValueError(f"{folder}: the folder name must contain 'mpt-1b-redpajama-200b' (open_flamingo keys on it)")
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = neox_style_tokenizer()
    if vocab_size is None:
        vocab_size = -(-(len(tokenizer) + 3) // 64) * 64
    if vocab_size < len(tokenizer) + 3:
        raise ValueError(f"vocab_size={vocab_size} is smaller than the tokenizer plus open_flamingo's 3 tokens")
    config = mosaic_config(d_model, n_heads, n_layers, vocab_size)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    torch.save(mosaic_state_dict(d_model, n_layers, vocab_size, seed), folder / "pytorch_model.bin")
    sentinel = str((folder / SENTINEL).resolve())
    for module in (REMOTE_CONFIG_MODULE, REMOTE_MODEL_MODULE):
        (folder / f"{module}.py").write_text(_STUB.format(sentinel=sentinel))
    tokenizer.save_pretrained(str(folder))
    return folder
