"""MosaicML's MPT-1B ("mosaic_gpt", OpenFlamingo-3B's language model) on transformers' own MPT.

The released folder (``anas-awadalla/mpt-1b-redpajama-200b(-dolly)``) ships its model as hub
remote code (mosaicml examples v0.0.4 ``MosaicGPT``), which fails on the pinned transformers and
is never run here. :func:`register_mosaic_gpt` registers, for ``model_type: mosaic_gpt``:

* :class:`MosaicGptConfig`: reads the mosaic ``config.json`` fields and fills in the native
  :class:`~transformers.MptConfig` ones (``mlp_ratio`` -> ``expansion_ratio``, ``attn_*`` ->
  ``attn_config``). A value the native code would silently ignore or get wrong is refused with a
  :class:`~pin.errors.PinError` naming the field (see :data:`REFUSED`). The mosaic fields stay on
  the config, so a saved config reads back the same. A field missing from ``config.json`` takes
  MPT-1B's value (the released files spell out every field).
* :class:`MosaicGptForCausalLM`: transformers' ``MptForCausalLM`` whose attention layers are
  replaced at construction by :class:`MosaicGptAttention` (the native attention plus mosaic's
  QK LayerNorm: ``q_ln`` / ``k_ln``, LayerNorm over the whole d_model without bias, applied to q
  and k after ``Wqkv`` (and ``attn_clip_qkv``) and before the head split). Decoder layers are
  ``transformer.blocks`` with the native block signature, as open_flamingo expects.
* a checkpoint conversion mapping (:func:`mosaic_key_mapping`) that renames the mosaic keys as the
  weights load, also when open_flamingo's factory calls ``AutoModelForCausalLM.from_pretrained``
  without a ``key_mapping`` argument; saving writes the mosaic names back.

transformers prefers a class registered from outside the library over a folder's ``auto_map``,
also with ``trust_remote_code=True`` (``explicit_local_code`` in ``auto_factory`` and
``configuration_auto``), so the folder's Python files are never imported.

Numerics kept from the native code, where mosaic differs:

* the attention softmax runs in fp32 and is cast back (mosaic: in the model dtype); identical in
  fp32, slightly more accurate in bf16/fp16;
* ``low_precision_layernorm``: mosaic's ``LPLayerNorm`` equals ``nn.LayerNorm`` in the input
  dtype; it differs only under ``torch.autocast``, where it normalises in the autocast dtype and
  ``nn.LayerNorm`` (kept here) in fp32. Outside autocast (how this project runs: the model is cast
  with ``.to(dtype)``) the two agree;
* padded key positions get ``finfo.min`` as in mosaic; rows of padding queries are garbage in both.
"""
from __future__ import annotations

import re

import torch
from torch import nn
from transformers import MptConfig, MptForCausalLM, MptModel
from transformers.models.mpt.modeling_mpt import MptAttention, MptPreTrainedModel

from pin.errors import PinError

MODEL_TYPE = "mosaic_gpt"

# MPT-1B's values (anas-awadalla/mpt-1b-redpajama-200b), used for fields config.json leaves out.
MOSAIC_DEFAULTS: dict[str, object] = {
    "mlp_ratio": 4,
    "attn_pdrop": 0.0,
    "attn_impl": "torch",
    "attn_qk_ln": True,
    "attn_clip_qkv": None,
    "softmax_scale": None,
    "prefix_lm": False,
    "attn_uses_sequence_id": False,
    "alibi": True,
    "alibi_bias_max": 8,
    "low_precision_layernorm": True,
    "verbose": 0,
    "param_init_fn": "kaiming_normal_",
    "init_div_is_residual": True,
    "init_std": 0.02,
    "emb_init_std": None,
    "emb_init_uniform_lim": None,
    "init_gain": 0,
    "fan_mode": "fan_in",
    "init_nonlinearity": "relu",
}

# What each refusal protects against, for the messages (and the docs).
REFUSED = {
    "alibi": "must be true: native MPT always uses ALiBi and has no learned position embedding",
    "alibi_bias_max": "must be 8: native MPT hard-codes 8",
    "n_heads": "must be a power of two: native MPT orders the ALiBi slopes of other head counts "
               "differently from mosaic_gpt v0.0.4",
    "mlp_ratio": "must be 4: native MPT hard-codes an expansion ratio of 4",
    "logit_scale": "must be null: native MPT ignores it",
    "prefix_lm": "must be false: native MPT has no prefix-LM mask",
    "attn_uses_sequence_id": "must be false: native MPT has no sequence-id mask",
    "no_bias": "must be true: native MPT has no bias parameters",
    "attn_impl": "must be 'torch' or 'triton' (the same ALiBi attention); 'flash' cannot add the "
                 "ALiBi bias in mosaic_gpt",
    "embedding_fraction": "must be in (0, 1]",
    "attn_pdrop": "must be 0: native MPT stores attn_pdrop as an int and reuses it for the residual "
                  "and MLP dropout",
    "resid_pdrop": "must be 0: native MPT takes the residual dropout from attn_pdrop",
    "emb_pdrop": "must be 0: native MPT has no embedding dropout",
}


def _refuse(field: str, value) -> PinError:
    return PinError(f"mosaic_gpt config field {field}={value!r}: {REFUSED[field]}")


def _check(cfg: MosaicGptConfig) -> None:
    """Raise for a field whose value the native MPT would ignore or compute differently."""
    if cfg.d_model % cfg.n_heads:
        raise PinError(f"mosaic_gpt config field d_model={cfg.d_model} is not divisible by n_heads={cfg.n_heads}")
    checks = {
        "alibi": cfg.alibi is True,
        "alibi_bias_max": cfg.alibi_bias_max == 8,
        "n_heads": cfg.n_heads > 0 and cfg.n_heads & (cfg.n_heads - 1) == 0,
        "mlp_ratio": cfg.mlp_ratio == 4,
        "logit_scale": cfg.logit_scale is None,
        "prefix_lm": not cfg.prefix_lm,
        "attn_uses_sequence_id": not cfg.attn_uses_sequence_id,
        "no_bias": cfg.no_bias is True,
        "attn_impl": cfg.attn_impl in ("torch", "triton"),
        "embedding_fraction": 0 < cfg.embedding_fraction <= 1,
        "attn_pdrop": cfg.attn_pdrop == 0,
        "resid_pdrop": cfg.resid_pdrop == 0,
        "emb_pdrop": cfg.emb_pdrop == 0,
    }
    for field, ok in checks.items():
        if not ok:
            raise _refuse(field, getattr(cfg, field))


class MosaicGptConfig(MptConfig):
    """A mosaic_gpt ``config.json`` read into the native :class:`~transformers.MptConfig`.

    ``softmax_scale`` (null = 1/sqrt(head_dim)) and ``attn_clip_qkv`` are passed on and honoured
    in mosaic's order (clip, then QK LayerNorm, then the scale). The
    ``init_*`` / ``param_init_fn`` fields only shape a random initialisation and are kept as
    given. ``embedding_fraction`` scales gradients only, never the forward pass.
    """

    model_type = MODEL_TYPE

    def __post_init__(self, **kwargs):
        mosaic = {k: kwargs.pop(k, default) for k, default in MOSAIC_DEFAULTS.items()}
        kwargs.pop("name", None)  # mosaic's own config drops these two
        kwargs.pop("loss_fn", None)
        for k, v in mosaic.items():
            setattr(self, k, v)  # plain attributes (not dataclass fields), saved with the config
        _check(self)
        self.expansion_ratio = int(self.mlp_ratio)
        self.attn_config = {
            "attn_type": "multihead_attention",
            "attn_pdrop": 0,  # refused otherwise (see REFUSED)
            "attn_impl": "torch",
            "clip_qkv": self.attn_clip_qkv,
            "softmax_scale": self.softmax_scale,
            "prefix_lm": False,
            "qk_ln": bool(self.attn_qk_ln),
            "attn_uses_sequence_id": False,
            "alibi": True,
            "alibi_bias_max": 8,
        }
        # mosaic's LayerNorms are nn.LayerNorm's default eps; native MPT reads layer_norm_epsilon
        self.layer_norm_epsilon = 1e-5
        super().__post_init__(**kwargs)


class MosaicGptAttention(MptAttention):
    """Native MPT attention plus mosaic's QK LayerNorm (``q_ln``, ``k_ln``: LayerNorm over the
    whole d_model, no bias, on q and k before the head split; the result is cast back to the
    dtype of ``Wqkv``'s output as mosaic does). Same call signature and outputs as the native."""

    def __init__(self, config: MosaicGptConfig, layer_idx: int | None = None):
        super().__init__(config, layer_idx)
        eps = config.layer_norm_epsilon
        self.q_ln = nn.LayerNorm(self.hidden_size, eps=eps, bias=False)
        self.k_ln = nn.LayerNorm(self.hidden_size, eps=eps, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, s = x.shape[:2]
        return x.reshape(b, s, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden_states, position_bias, past_key_values=None, attention_mask=None, **kwargs):
        batch_size, seq_length = hidden_states.shape[:2]
        mixed_qkv = self.Wqkv(hidden_states)
        if self.clip_qkv:
            mixed_qkv = mixed_qkv.clamp(min=-self.clip_qkv, max=self.clip_qkv)
        query, key, value = mixed_qkv.chunk(3, dim=2)
        query = self.q_ln(query).to(mixed_qkv.dtype)
        key = self.k_ln(key).to(mixed_qkv.dtype)
        query, key, value = self._heads(query), self._heads(key), self._heads(value)

        if past_key_values is not None:
            key, value = past_key_values.update(key, value, self.layer_idx)

        scores = torch.matmul(query, key.transpose(-1, -2)) * self.softmax_scale
        if position_bias is not None:
            # (heads, 1, max_seq_len) ALiBi row: its last key_length columns; it depends on the
            # key index only, the query's own offset cancels in the softmax
            scores = scores + position_bias[:, :, position_bias.shape[-1] - key.shape[-2]:]
        if attention_mask is not None:
            scores = scores.masked_fill(attention_mask, torch.finfo(query.dtype).min)
        weights = nn.functional.softmax(scores.float(), dim=-1).to(value.dtype)
        weights = nn.functional.dropout(weights, p=self.attn_dropout_p, training=self.training)
        context = torch.matmul(weights, value).permute(0, 2, 1, 3).reshape(batch_size, seq_length, -1)
        return self.out_proj(context), weights


class MosaicGptModel(MptModel):
    """Native ``MptModel`` with each block's attention replaced by :class:`MosaicGptAttention`
    when the config asks for QK LayerNorm."""

    config_class = MosaicGptConfig

    def __init__(self, config: MosaicGptConfig):
        super().__init__(config)
        if config.attn_config.qk_ln:
            for i, block in enumerate(self.blocks):
                block.attn = MosaicGptAttention(config, layer_idx=i)


class MosaicGptForCausalLM(MptForCausalLM):
    """Native ``MptForCausalLM`` (tied head, ALiBi, no biases) on :class:`MosaicGptModel`."""

    config_class = MosaicGptConfig

    def __init__(self, config: MosaicGptConfig):
        # MptForCausalLM.__init__ would build a native MptModel first; build ours directly
        MptPreTrainedModel.__init__(self, config)
        self.transformer = MosaicGptModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


# mosaic_gpt key -> native key, as (source regex, target) pairs; q_ln / k_ln keep their names.
KEY_MAPPING: tuple[tuple[str, str], ...] = (
    (r"\.ln_1\.", ".norm_1."),
    (r"\.ln_2\.", ".norm_2."),
    (r"\.mlp\.mlp_up\.", ".ffn.up_proj."),
    (r"\.mlp\.mlp_down\.", ".ffn.down_proj."),
    (r"\.ln_f\.", ".norm_f."),
)


def mosaic_key_mapping() -> list:
    """The :data:`KEY_MAPPING` as transformers weight renamings (applied at load, reversed at save)."""
    from transformers.core_model_loading import WeightRenaming

    return [WeightRenaming(source, target) for source, target in KEY_MAPPING]


def native_key(mosaic_key: str) -> str:
    """The native parameter name of one mosaic_gpt state-dict key (for tests and messages)."""
    for source, target in KEY_MAPPING:
        mosaic_key = re.sub(source, target, mosaic_key, count=1)
    return mosaic_key


_registered = False


def register_mosaic_gpt() -> None:
    """Register :class:`MosaicGptConfig` / :class:`MosaicGptForCausalLM` and the key mapping with
    transformers for ``model_type: mosaic_gpt`` (idempotent). Afterwards
    ``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`` builds our class and
    never imports the folder's remote code."""
    global _registered
    if _registered:
        return
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.conversion_mapping import register_checkpoint_conversion_mapping

    AutoConfig.register(MODEL_TYPE, MosaicGptConfig, exist_ok=True)
    AutoModelForCausalLM.register(MosaicGptConfig, MosaicGptForCausalLM, exist_ok=True)
    register_checkpoint_conversion_mapping(MODEL_TYPE, mosaic_key_mapping(), overwrite=True)
    _registered = True

