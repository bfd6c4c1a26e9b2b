"""MPT-1B (mosaic_gpt) on transformers' native MPT: logits against explicit math, loading the
released on-disk format without remote code, refusals, and the Flamingo-wrapped forward."""
from __future__ import annotations

import contextlib
import io
import json
import math
import sys

import pytest
import torch

torch.set_num_threads(1)

from transformers import AutoModelForCausalLM, AutoTokenizer, MptConfig, MptForCausalLM  # noqa: E402

from pin.errors import PinError  # noqa: E402
from rehearsal.mosaic_standin import (  # noqa: E402
    REMOTE_CONFIG_MODULE,
    REMOTE_MODEL_MODULE,
    SENTINEL,
    mosaic_config,
    mosaic_state_dict,
    write_tiny_mosaic_gpt,
)
from pin.vlm.mpt import (  # noqa: E402
    MosaicGptConfig,
    MosaicGptForCausalLM,
    native_key,
    register_mosaic_gpt,
)

D, H, LAYERS, VOCAB = 64, 4, 2, 96
TOL = 1e-4


# ------------------------------------------------------------------ explicit-math reference
def _ln(x, w, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def reference_logits(w, ids, mask, n_heads, *, qk_ln=True, softmax_scale=None, clip_qkv=None):
    """mosaic_gpt's forward written out with plain torch ops on the mosaic state dict: ALiBi
    slopes 2^-(8(h+1)/H), causal and key-padding masks, LayerNorm over d_model on q and k before
    the head split, exact GELU MLP, final LayerNorm, logits = x @ wte^T."""
    wte = w["transformer.wte.weight"]
    x = wte[ids]
    b, length, d = x.shape
    hd = d // n_heads
    scale = softmax_scale if softmax_scale is not None else 1 / math.sqrt(hd)
    slopes = torch.tensor([2.0 ** (-8 * (h + 1) / n_heads) for h in range(n_heads)])
    pos = torch.arange(length)
    distance = (pos[:, None] - pos[None, :]).float()  # query i - key j
    alibi = -slopes[:, None, None] * distance  # (H, L, L)
    allowed = (pos[None, :] <= pos[:, None])[None] & mask.bool()[:, None, :]  # (B, Lq, Lk)
    n_layers = sum(1 for k in w if k.endswith(".ln_1.weight"))
    for i in range(n_layers):
        p = f"transformer.blocks.{i}."
        qkv = _ln(x, w[p + "ln_1.weight"]) @ w[p + "attn.Wqkv.weight"].T
        if clip_qkv is not None:
            qkv = qkv.clamp(-clip_qkv, clip_qkv)
        q, k, v = qkv.split(d, dim=-1)
        if qk_ln:
            q, k = _ln(q, w[p + "attn.q_ln.weight"]), _ln(k, w[p + "attn.k_ln.weight"])
        q, k, v = (t.reshape(b, length, n_heads, hd).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) * scale + alibi
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        att = torch.nan_to_num(scores.softmax(-1), nan=0.0)  # a padding query sees no key
        ctx = (att @ v).transpose(1, 2).reshape(b, length, d)
        x = x + ctx @ w[p + "attn.out_proj.weight"].T
        hidden = _ln(x, w[p + "ln_2.weight"]) @ w[p + "mlp.mlp_up.weight"].T
        x = x + _gelu(hidden) @ w[p + "mlp.mlp_down.weight"].T
    return _ln(x, w["transformer.ln_f.weight"]) @ wte.T


def left_padded(lengths, vocab, seed=1):
    g = torch.Generator().manual_seed(seed)
    length = max(lengths)
    ids = torch.randint(1, vocab, (len(lengths), length), generator=g)
    mask = torch.zeros(len(lengths), length, dtype=torch.long)
    for r, n in enumerate(lengths):
        mask[r, length - n:] = 1
        ids[r, : length - n] = 0  # pad id; masked anyway
    return ids, mask


def max_diff_on(mask, a, b):
    valid = mask.bool()
    return (a[valid] - b[valid]).abs().max().item()


def build(weights, **fields):
    cfg = MosaicGptConfig(**{**mosaic_config(D, H, LAYERS, VOCAB), **fields})
    model = MosaicGptForCausalLM(cfg).eval()
    state = {native_key(k): v for k, v in weights.items()}
    if not cfg.attn_qk_ln:
        state = {k: v for k, v in state.items() if "_ln." not in k}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert set(missing) <= {"lm_head.weight"} and not unexpected, (missing, unexpected)
    return model


@pytest.fixture(scope="module")
def weights():
    w = mosaic_state_dict(D, LAYERS, VOCAB, seed=0)
    for key in ("transformer.blocks.0.attn.q_ln.weight", "transformer.blocks.0.attn.k_ln.weight"):
        assert not torch.allclose(w[key], torch.ones_like(w[key]))
    return w


# ------------------------------------------------------------------------------- numerics
@pytest.mark.parametrize(
    "fields",
    [{}, {"softmax_scale": 0.3, "attn_clip_qkv": 0.8}, {"attn_qk_ln": False}],
    ids=["mpt1b", "scale+clip", "no_qk_ln"],
)
def test_logits_match_reference_with_left_padding(weights, fields):
    model = build(weights, **fields)
    ids, mask = left_padded([9, 6, 3], VOCAB)
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=mask).logits
    want = reference_logits(weights, ids, mask, H, qk_ln=fields.get("attn_qk_ln", True),
                            softmax_scale=fields.get("softmax_scale"), clip_qkv=fields.get("attn_clip_qkv"))
    diff = max_diff_on(mask, got, want)
    print(f"max |logit - reference| ({fields or 'MPT-1B config'}, left padding): {diff:.3e}")
    assert diff < TOL
    assert want[mask.bool()].abs().max() > 1.0  # the comparison is not between near-zero logits


def test_cached_decoding_matches_reference(weights):
    model = build(weights)
    ids, mask = left_padded([10, 7], VOCAB, seed=2)
    prompt = 5
    want = reference_logits(weights, ids, mask, H)
    with torch.no_grad():
        out = model(input_ids=ids[:, :prompt], attention_mask=mask[:, :prompt], use_cache=True)
        steps = [out.logits]
        past = out.past_key_values
        for t in range(prompt, ids.shape[1]):
            out = model(input_ids=ids[:, t:t + 1], attention_mask=mask[:, :t + 1],
                        past_key_values=past, use_cache=True)
            past = out.past_key_values
            steps.append(out.logits)
    got = torch.cat(steps, dim=1)
    diff = max_diff_on(mask, got, want)
    print(f"max |logit - reference| (cached decoding, left padding): {diff:.3e}")
    assert diff < TOL


def test_plain_native_mpt_disagrees(weights):
    """The same weights without q_ln/k_ln in transformers' MptForCausalLM (which accepts and
    ignores qk_ln) give different logits: the QK LayerNorm matters."""
    native = MptForCausalLM(MptConfig(
        d_model=D, n_heads=H, n_layers=LAYERS, expansion_ratio=4, vocab_size=VOCAB, no_bias=True,
        attn_config={"alibi": True, "qk_ln": True},
    )).eval()
    state = {native_key(k): v for k, v in weights.items() if "_ln." not in k}
    missing, unexpected = native.load_state_dict(state, strict=False)
    assert set(missing) <= {"lm_head.weight"} and not unexpected
    ids, mask = left_padded([9, 6, 3], VOCAB)
    with torch.no_grad():
        got = native(input_ids=ids, attention_mask=mask).logits
    diff = max_diff_on(mask, got, reference_logits(weights, ids, mask, H))
    print(f"max |logit - reference| (plain MptForCausalLM): {diff:.3e}")
    assert diff > 0.1


# ------------------------------------------------------------------- loading the folder
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_mosaic_gpt(tmp_path_factory.mktemp("lm") / "mpt-1b-redpajama-200b-dolly", seed=3)


def _spy_remote_code(monkeypatch, tmp_path):
    """Point the HF modules cache at an empty tmp dir and record any remote-code class lookup."""
    import transformers.dynamic_module_utils as dyn
    import transformers.models.auto.auto_factory as auto_factory
    import transformers.models.auto.configuration_auto as configuration_auto
    import transformers.models.auto.tokenization_auto as tokenization_auto

    cache = tmp_path / "hf_modules"
    monkeypatch.setenv("HF_MODULES_CACHE", str(cache))
    monkeypatch.setattr(dyn, "HF_MODULES_CACHE", str(cache))
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"remote code requested: {args}")

    for module in (dyn, auto_factory, configuration_auto, tokenization_auto):
        if hasattr(module, "get_class_from_dynamic_module"):
            monkeypatch.setattr(module, "get_class_from_dynamic_module", refuse)
    return cache, calls


def test_from_pretrained_builds_our_class_without_remote_code(folder, monkeypatch, tmp_path):
    cache, calls = _spy_remote_code(monkeypatch, tmp_path)
    register_mosaic_gpt()
    register_mosaic_gpt()  # idempotent
    model, info = AutoModelForCausalLM.from_pretrained(
        str(folder), local_files_only=True, trust_remote_code=True, output_loading_info=True
    )
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=True)
    assert type(model) is MosaicGptForCausalLM
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert not calls
    assert not (folder / SENTINEL).exists()
    assert not cache.exists() or not any(cache.iterdir())
    assert REMOTE_CONFIG_MODULE not in sys.modules and REMOTE_MODEL_MODULE not in sys.modules
    assert not any("configuration_mosaic_gpt" in name for name in sys.modules)

    saved = torch.load(folder / "pytorch_model.bin", weights_only=True)
    assert not any(k.endswith(".bias") for k in saved)
    loaded = model.state_dict()
    assert set(loaded) == {native_key(k) for k in saved} | {"lm_head.weight"}
    for k, v in saved.items():
        assert torch.equal(loaded[native_key(k)], v), k
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()  # tied
    assert len(tokenizer) < model.config.vocab_size
    assert tokenizer.decode(tokenizer.encode(" [14,28,112,98]")) == " [14,28,112,98]"


def test_stub_remote_code_would_leave_a_sentinel(folder, tmp_path):
    """The stand-in's remote-code files really do leave a trace, so the test above can fail."""
    import runpy

    copy = tmp_path / "mpt-1b-redpajama-200b-copy"
    write_tiny_mosaic_gpt(copy, n_layers=1)
    with pytest.raises(RuntimeError, match="remote code"):
        runpy.run_path(str(copy / f"{REMOTE_MODEL_MODULE}.py"))
    assert (copy / SENTINEL).exists()


def test_save_round_trip_keeps_mosaic_names(folder, tmp_path):
    register_mosaic_gpt()
    model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
    model.save_pretrained(tmp_path / "again")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "again" / "model.safetensors"), "pt") as f:
        saved_keys = set(f.keys())
    assert saved_keys == set(torch.load(folder / "pytorch_model.bin", weights_only=True))  # mosaic names
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again["model_type"] == "mosaic_gpt" and again["attn_qk_ln"] is True and again["mlp_ratio"] == 4
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "again"), local_files_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[k], v), k


def test_mpt1b_sizes_and_key_names():
    """The released MPT-1B config builds (on the meta device) with the expected parameter count,
    and the mosaic key names of open_flamingo issue #210 cover every parameter after the mapping."""
    cfg = MosaicGptConfig(**mosaic_config(2048, 16, 24, 50432))
    with torch.device("meta"):
        model = MosaicGptForCausalLM(cfg)
    n = sum(p.numel() for p in model.parameters())
    d = 2048
    assert n == 50432 * d + 24 * (3 * d * d + d * d + 8 * d * d + 4 * d) + d  # ~1.31e9, no biases
    names = ["ln_1", "attn.Wqkv", "attn.q_ln", "attn.k_ln", "attn.out_proj", "ln_2", "mlp.mlp_up", "mlp.mlp_down"]
    mosaic = {f"transformer.blocks.{i}.{m}.weight" for i in range(24) for m in names}
    mosaic |= {"transformer.wte.weight", "transformer.ln_f.weight"}
    assert {native_key(k) for k in mosaic} | {"lm_head.weight"} == set(model.state_dict())


# ---------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("alibi", False), ("alibi_bias_max", 16), ("mlp_ratio", 2), ("logit_scale", 0.5),
        ("logit_scale", "inv_sqrt_d_model"), ("prefix_lm", True), ("attn_uses_sequence_id", True),
        ("no_bias", False), ("attn_impl", "flash"), ("attn_pdrop", 0.1), ("resid_pdrop", 0.1),
        ("emb_pdrop", 0.1), ("embedding_fraction", 0.0),
    ],
)
def test_refused_fields_name_the_field(field, value):
    with pytest.raises(PinError, match=rf"\b{field}="):
        MosaicGptConfig(**{**mosaic_config(D, H, LAYERS, VOCAB), field: value})


def test_non_power_of_two_heads_refused():
    with pytest.raises(PinError, match=r"n_heads=6"):
        MosaicGptConfig(**{**mosaic_config(96, 6, LAYERS, VOCAB)})


def test_refusal_through_from_pretrained(tmp_path):
    f = write_tiny_mosaic_gpt(tmp_path / "mpt-1b-redpajama-200b", n_layers=1)
    cfg = json.loads((f / "config.json").read_text())
    (f / "config.json").write_text(json.dumps({**cfg, "alibi_bias_max": 4}))
    register_mosaic_gpt()
    with pytest.raises(PinError, match="alibi_bias_max=4"):
        AutoModelForCausalLM.from_pretrained(str(f), local_files_only=True, trust_remote_code=True)


# ------------------------------------------------------------- inside open_flamingo's factory
CLIP_NAME = "pin-test-mpt-tiny-vit"


@pytest.fixture(scope="module")
def flamingo_parts(folder, tmp_path_factory):
    import open_clip
    import open_flamingo

    clip_dir = tmp_path_factory.mktemp("clip")
    (clip_dir / f"{CLIP_NAME}.json").write_text(json.dumps({
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(clip_dir)
    register_mosaic_gpt()
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        flamingo, processor, tokenizer = open_flamingo.create_model_and_transforms(
            CLIP_NAME, "", str(folder), str(folder), use_local_files=True,
            decoder_layers_attr_name="transformer.blocks",
        )
    return flamingo.eval(), processor, tokenizer


def test_flamingo_factory_wraps_our_blocks(flamingo_parts, folder):
    from open_flamingo.src.flamingo_lm import FlamingoLayer

    from pin.vlm.openflamingo import OpenFlamingoAdapter, set_gates

    flamingo, processor, tokenizer = flamingo_parts
    lm = flamingo.lang_encoder
    assert isinstance(lm, MosaicGptForCausalLM)
    assert all(isinstance(b, FlamingoLayer) for b in lm.transformer.blocks)
    emb = lm.get_input_embeddings()
    assert emb is lm.transformer.wte and emb.weight.shape[0] == len(tokenizer)  # resized by the factory
    assert lm.lm_head.weight.data_ptr() == emb.weight.data_ptr()  # still tied after the resize

    # gates closed (tanh(0) = 0): the wrapped LM computes exactly the mosaic reference
    saved = torch.load(folder / "pytorch_model.bin", weights_only=True)
    saved["transformer.wte.weight"] = saved["transformer.wte.weight"][: len(tokenizer)]
    rows = [tokenizer.encode("<image>In the image is a dog located at"), tokenizer.encode("<image>a cat")]
    length = max(map(len, rows))
    ids = torch.full((2, length), tokenizer.pad_token_id)
    mask = torch.zeros(2, length, dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, length - len(row):], mask[r, length - len(row):] = torch.tensor(row), 1
    vis = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        for layer in lm._get_decoder_layers():
            layer.condition_vis_x(vis)
        got = lm(input_ids=ids, attention_mask=mask).logits
        lm.clear_conditioned_layers()
    diff = max_diff_on(mask, got, reference_logits(saved, ids, mask, H))
    print(f"max |logit - reference| (Flamingo-wrapped, gates closed): {diff:.3e}")
    assert diff < TOL

    # gates open: the adapter's cached greedy loop equals its uncached one
    set_gates(flamingo, 1.0)
    vlm = OpenFlamingoAdapter(flamingo, processor, tokenizer)
    assert vlm._position_ids is False  # ALiBi: no position ids passed
    feats = vlm.patch_features(torch.randn(2, 3, 32, 32))
    prompts = [vlm.prompt("dog"), vlm.prompt("traffic light")]
    cached = vlm.generate(feats, prompts, max_new_tokens=6, use_cache=True)
    full = vlm.generate(feats, prompts, max_new_tokens=6, use_cache=False)
    assert cached == full
    loss = vlm.answer_loss(feats, prompts, [" [14,28,112,98]", " [0,0,224,224]"])
    assert torch.isfinite(loss)


def test_adapter_from_pretrained_on_the_mosaic_folder(flamingo_parts, folder, monkeypatch, tmp_path):
    """The paper-profile entry point on a mosaic_gpt folder: our class, no remote code, the
    checkpoint's weights in place."""
    from pin.vlm.openflamingo import OpenFlamingoAdapter

    flamingo = flamingo_parts[0]
    torch.save(flamingo.state_dict(), tmp_path / "checkpoint.pt")
    cache, calls = _spy_remote_code(monkeypatch, tmp_path)
    vlm = OpenFlamingoAdapter.from_pretrained(
        tmp_path / "checkpoint.pt", folder, clip_model=CLIP_NAME, clip_pretrained=""
    )
    assert isinstance(vlm.flamingo.lang_encoder, MosaicGptForCausalLM)
    assert not calls and not (folder / SENTINEL).exists()
    assert not cache.exists() or not any(cache.iterdir())
    want = flamingo.state_dict()
    for k, v in vlm.flamingo.state_dict().items():
        assert torch.equal(v, want[k]), k
