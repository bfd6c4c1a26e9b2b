"""OpenFlamingoAdapter on a tiny random-weight OpenFlamingo (no hub, CPU, seconds).

The tiny model is built the way the paper profile is: open_flamingo's own factory
(``create_model_and_transforms``) on local files - an open_clip ViT registered with
``add_model_config``, a 2-layer Llama saved to a folder, our word-level tokenizer - and then
loaded again through ``OpenFlamingoAdapter.from_pretrained`` from a saved checkpoint.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import time

import pytest
import torch

torch.set_num_threads(1)

import open_clip  # noqa: E402
import open_flamingo  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from pin.errors import PinError  # noqa: E402
from pin.vlm.openflamingo import (  # noqa: E402
    IGNORE_INDEX,
    OpenFlamingoAdapter,
    masked_answer_loss,
    set_gates,
)
from pin.vlm.tokenizer import build_word_tokenizer, save_tokenizer  # noqa: E402

CLIP_NAME = "pin-test-tiny-vit"
BOX = re.compile(r"^ \[\d+(\.\d+)?(,\d+(\.\d+)?){3}\]$")
OBJECTS = ["car", "dog", "red apple", "traffic light"]


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_of")
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    }
    (root / "clip").mkdir()
    (root / "clip" / f"{CLIP_NAME}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(root / "clip")

    tok = build_word_tokenizer(OBJECTS)
    save_tokenizer(tok, root / "tokenizer")
    torch.manual_seed(0)
    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
            tie_word_embeddings=True, initializer_range=0.02,  # logits big enough to overfit
        )
    )
    lm.save_pretrained(root / "lm")
    with contextlib.redirect_stdout(io.StringIO()):
        flamingo, _, _ = open_flamingo.create_model_and_transforms(
            CLIP_NAME, "", str(root / "lm"), str(root / "tokenizer"), use_local_files=True
        )
    set_gates(flamingo, 1.0)  # a fresh Flamingo ignores the image (tanh(0) = 0)
    torch.save(flamingo.state_dict(), root / "checkpoint.pt")
    return root


def load(files, **kw) -> OpenFlamingoAdapter:
    return OpenFlamingoAdapter.from_pretrained(
        files / "checkpoint.pt", files / "lm", files / "tokenizer",
        clip_model=CLIP_NAME, clip_pretrained="", **kw,
    )


@pytest.fixture(scope="module")
def vlm(tiny_files) -> OpenFlamingoAdapter:
    return load(tiny_files)


def features(vlm, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return vlm.patch_features(torch.randn(n, 3, 32, 32, generator=g))


def batch(vlm, n=4):
    prompts = [vlm.prompt(OBJECTS[i % len(OBJECTS)]) for i in range(n)]
    answers = [" [14,28,112,98]", " [0,0,224,224]", " [56,42,70,210]", " [7.5,14,21,28]"][:n]
    return features(vlm, n), prompts, answers


def zero_insert(vlm, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (0.01 * torch.randn(vlm.site.n_positions, vlm.site.width, generator=g)).requires_grad_(True)


def state(vlm):
    return {k: v.detach().clone() for k, v in vlm.flamingo.state_dict().items()}


def test_site_and_features(vlm):
    assert vlm.site.n_positions == 16 and vlm.site.width == 64 and vlm.site.grid == 4
    assert not vlm.site.has_cls
    f = features(vlm, 2)
    assert f.shape == (2, 16, 64) and not f.requires_grad
    assert all(not p.requires_grad for p in vlm.flamingo.parameters())
    assert not vlm.flamingo.training


def test_preprocess(vlm):
    from PIL import Image

    pixels = vlm.preprocess([Image.new("RGB", (50, 40), "red"), Image.new("L", (32, 32))])
    assert pixels.shape == (2, 3, 32, 32)
    assert vlm.patch_features(pixels).shape == (2, 16, 64)


def test_insert_trains_and_vlm_stays_bit_identical(vlm):
    t0 = time.time()
    before = state(vlm)
    feats, prompts, answers = batch(vlm)
    insert = zero_insert(vlm)
    opt = torch.optim.Adam([insert], lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        loss = vlm.answer_loss(feats, prompts, answers, insert)
        loss.backward()
        assert insert.grad is not None and (insert.grad != 0).all(), "every insert element needs a gradient"
        opt.step()
    after = state(vlm)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert all(p.grad is None for p in vlm.flamingo.parameters())
    assert time.time() - t0 < 20


def test_closed_gates_give_zero_insert_gradient(tiny_files):
    closed = load(tiny_files)
    set_gates(closed.flamingo, 0.0)
    feats, prompts, answers = batch(closed)
    insert = zero_insert(closed)
    closed.answer_loss(feats, prompts, answers, insert).backward()
    assert torch.count_nonzero(insert.grad) == 0


@pytest.fixture(scope="module")
def trained():
    """A tiny Flamingo whose fusion network and LM were trained (all but the vision tower) to
    read K random images' boxes: a random frozen LM cannot be steered by an insert alone into
    emitting a whole box string (tried: the loss stalls at 3-5 nats/token), a pretrained one can,
    as PIN assumes. Built directly (``build_mini_flamingo``) with a 1-layer perceiver for speed."""
    from pin.vlm.mini import MiniVLMConfig, build_mini_flamingo, trainable_for_pretraining

    cfg = MiniVLMConfig(
        image_size=32, patch_size=8, vision_width=64, vision_layers=2, vision_heads=2,
        perceiver_depth=1, perceiver_heads=2, perceiver_dim_head=32, perceiver_latents=8,
        lm_width=64, lm_layers=2, lm_heads=2, lm_intermediate=128, xattn_every=1,
        xattn_heads=2, xattn_dim_head=32, gate_init=1.0,
    )
    flamingo, proc, tok = build_mini_flamingo(cfg, OBJECTS)
    adapter = OpenFlamingoAdapter(flamingo, proc, tok, name="tiny-trained")
    g = torch.Generator().manual_seed(0)
    k = 8
    feats = adapter.patch_features(torch.randn(k, 3, 32, 32, generator=g))
    prompts = [adapter.prompt(OBJECTS[i % len(OBJECTS)]) for i in range(k)]
    answers = [" [%d,%d,%d,%d]" % tuple(torch.randint(0, 224, (4,), generator=g).tolist()) for _ in range(k)]
    groups = trainable_for_pretraining(flamingo)
    params = groups["perceiver"] + groups["xattn"] + groups["lm"]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=3e-3)
    for _ in range(200):
        opt.zero_grad()
        loss = adapter.answer_loss(feats, prompts, answers)
        loss.backward()
        opt.step()
        if loss.item() < 0.02:
            break
    for p in params:
        p.requires_grad_(False)
        p.grad = None
    assert adapter.generate(feats, prompts) == answers
    return adapter, prompts, answers


def test_loss_decreases_training_a_free_insert(trained):
    vlm, prompts, answers = trained
    feats = features(vlm, 4, seed=11)  # new images
    insert = torch.zeros(vlm.site.n_positions, vlm.site.width, requires_grad=True)
    opt = torch.optim.Adam([insert], lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = vlm.answer_loss(feats, prompts[:4], answers[:4], insert)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_overfit_one_example_generates_a_box_and_cache_matches(trained):
    vlm, prompts, answers = trained
    feats = features(vlm, 1, seed=12)  # a new image; the insert must make it read as image 2
    insert = torch.zeros(vlm.site.n_positions, vlm.site.width, requires_grad=True)
    opt = torch.optim.Adam([insert], lr=0.1)
    for _ in range(200):
        opt.zero_grad()
        loss = vlm.answer_loss(feats, prompts[2:3], answers[2:3], insert)
        loss.backward()
        opt.step()
        if loss.item() < 0.05:  # the trained model's own floor on its training images is ~0.02
            break
    assert loss.item() < 0.05
    cached = vlm.generate(feats, prompts[2:3], insert.detach())
    uncached = vlm.generate(feats, prompts[2:3], insert.detach(), use_cache=False)
    assert cached == uncached
    assert BOX.match(cached[0]), cached
    assert cached == answers[2:3], (cached, loss.item())


def test_adapter_logits_match_the_library_forward(vlm):
    """No insert: our submodule calls give Flamingo.forward's logits (vision, perceiver,
    conditioning and media locations as the library does them)."""
    g = torch.Generator().manual_seed(5)
    pixels = torch.randn(3, 3, 32, 32, generator=g)
    prompts = [vlm.prompt(o) for o in OBJECTS[:3]]
    ids, mask, _ = vlm.teacher_forcing_batch(prompts, [" [1,2,3,4]", " [10,20,30,40]", " [5,6,7,8]"])
    ours = vlm.logits(vlm.patch_features(pixels), ids, mask)
    with torch.no_grad():
        theirs = vlm.flamingo(pixels[:, None, None], ids, attention_mask=mask).logits
    real = mask.bool()  # padding positions differ (we give them the last real position)
    assert torch.allclose(ours[real], theirs[real], atol=1e-5)
    assert not vlm.flamingo.lang_encoder.is_conditioned()  # nothing left behind


def test_batched_cached_decoding_matches_uncached_and_single(tiny_files):
    """Left padding + KV cache: same tokens as full recomputation and as one prompt at a time
    (float64 so that no near-tie can flip an argmax)."""
    vlm = load(tiny_files, dtype=torch.float64)
    prompts = [vlm.prompt(o) for o in ["car", "red apple traffic light dog", "dog", "traffic light"]]
    feats = features(vlm, len(prompts), seed=3)
    insert = torch.randn(vlm.site.n_positions, vlm.site.width, dtype=torch.float64)
    cached = vlm.generate(feats, prompts, insert, max_new_tokens=12)
    uncached = vlm.generate(feats, prompts, insert, max_new_tokens=12, use_cache=False)
    single = [vlm.generate(feats[i : i + 1], [p], insert, max_new_tokens=12)[0] for i, p in enumerate(prompts)]
    assert cached == uncached == single
    assert any(cached), "random model should emit something"


def test_loss_counts_answer_tokens_only(vlm):
    feats, prompts, answers = batch(vlm)
    ids, mask, labels = vlm.teacher_forcing_batch(prompts, answers)
    tok = vlm.tokenizer
    for i, (p, a) in enumerate(zip(prompts, answers)):
        n_p = len(tok(p)["input_ids"])
        a_ids = tok(a + vlm.answer_end, add_special_tokens=False)["input_ids"]
        assert (labels[i, :n_p] == IGNORE_INDEX).all()
        assert labels[i, n_p : n_p + len(a_ids)].tolist() == a_ids
        assert a_ids[-1] == vlm.end_token_id  # the end token is scored
        assert (labels[i, n_p + len(a_ids) :] == IGNORE_INDEX).all()
        assert mask[i].sum() == n_p + len(a_ids)

    logits = vlm.logits(feats, ids, mask).detach().requires_grad_(True)
    loss = masked_answer_loss(logits, labels)
    assert torch.allclose(loss, vlm.answer_loss(feats, prompts, answers))
    loss.backward()
    scored = labels[:, 1:] != IGNORE_INDEX  # logits[:, t] predicts token t+1
    grad_norm = logits.grad[:, :-1].abs().sum(-1)
    assert (grad_norm[~scored] == 0).all() and (grad_norm[scored] > 0).all()
    assert (logits.grad[:, -1] == 0).all()

    # Giving the prompt positions targets (any targets) changes nothing only when masked.
    relabeled = labels.clone()
    relabeled[labels == IGNORE_INDEX] = 5
    assert not torch.allclose(masked_answer_loss(logits, relabeled), loss)
    manual = torch.nn.functional.cross_entropy(logits[:, :-1][scored], labels[:, 1:][scored])
    assert torch.allclose(manual, loss)


def test_bad_inputs(vlm):
    feats, prompts, answers = batch(vlm, 2)
    with pytest.raises(ValueError, match="insert must be"):
        vlm.answer_loss(feats, prompts, answers, torch.zeros(3, 64))
    with pytest.raises(ValueError, match="exactly one"):
        vlm.answer_loss(feats, ["no image here", prompts[1]], answers)
    with pytest.raises(ValueError, match="num_beams"):
        vlm.generate(feats, prompts, num_beams=0)
    assert vlm.generate(feats, prompts, max_new_tokens=0, num_beams=3) == ["", ""]
    assert vlm.generate(feats, prompts, max_new_tokens=0) == ["", ""]


def test_from_pretrained_round_trip(tiny_files, vlm):
    again = load(tiny_files)
    feats, prompts, answers = batch(vlm)
    assert torch.equal(vlm.answer_loss(feats, prompts, answers), again.answer_loss(feats, prompts, answers))
    # the paper profile feeds the perceiver tokens without the tower's final LayerNorm
    px = torch.randn(1, 3, 32, 32)
    assert vlm.flamingo.vision_encoder.final_ln_after_pool
    assert not torch.allclose(vlm.patch_features(px).mean(-1), torch.zeros(1, 16), atol=1e-3)
    normed = load(tiny_files, ln_patch_tokens=True)  # the PIN authors' open_clip 2.23 behaviour
    assert not normed.flamingo.vision_encoder.final_ln_after_pool
    assert torch.allclose(normed.patch_features(px).mean(-1), torch.zeros(1, 16), atol=1e-4)


def test_missing_weights_name_the_models_and_params(tmp_path, tiny_files):
    with pytest.raises(PinError) as err:
        OpenFlamingoAdapter.from_pretrained(tmp_path / "nope.pt", tmp_path / "nolm")
    msg = str(err.value)
    for needle in (
        "openflamingo/OpenFlamingo-3B-vitl-mpt1b-langinstruct",
        "anas-awadalla/mpt-1b-redpajama-200b-dolly",
        "ViT-L-14",
        "vlm.checkpoint",
        "vlm.lang_model",
    ):
        assert needle in msg
    with pytest.raises(PinError, match="lang_model"):
        OpenFlamingoAdapter.from_pretrained(tiny_files / "checkpoint.pt", tmp_path / "nolm")
    bad = tmp_path / "bad.pt"
    torch.save({"perceiver.nonsense": torch.zeros(1)}, bad)
    with pytest.raises(PinError, match="unexpected"):
        load_from(tiny_files, bad)


def load_from(files, checkpoint):
    return OpenFlamingoAdapter.from_pretrained(
        checkpoint, files / "lm", files / "tokenizer", clip_model=CLIP_NAME, clip_pretrained=""
    )


def test_checkpoint_folder_and_half_precision(tiny_files):
    """A snapshot folder holding checkpoint.pt loads; a bf16 model takes an fp32 insert (added
    in fp32, then cast) and hands back an fp32 gradient."""
    half = load_from(tiny_files, tiny_files)
    half.to(dtype=torch.bfloat16)
    feats, prompts, answers = batch(half, 2)
    assert feats.dtype == torch.bfloat16
    insert = zero_insert(half)
    half.answer_loss(feats, prompts, answers, insert).backward()
    assert insert.grad.dtype == torch.float32 and torch.count_nonzero(insert.grad) > 0
    assert all(isinstance(s, str) for s in half.generate(feats, prompts, insert.detach(), max_new_tokens=4))


# ------------------------------------------------- extension points for the baselines (pin.methods)
def test_interleaved_images_match_the_library_forward(vlm):
    """Several <image>s per prompt (in-context examples): features (B, T, N, D) give the logits of
    Flamingo.forward on vision_x (B, T, 1, C, H, W) - each text token attends to its own image."""
    g = torch.Generator().manual_seed(6)
    pixels = torch.randn(2, 3, 3, 32, 32, generator=g)
    context = vlm.prompt("car") + " [1,2,3,4]" + vlm.answer_end + vlm.prompt("dog") + " [5,6,7,8]" + vlm.answer_end
    prompts = [context + vlm.prompt("red apple"), context + vlm.prompt("traffic light")]
    ids, mask, _ = vlm.teacher_forcing_batch(prompts, [" [1,2,3,4]", " [10,20,30,40]"], n_images=3)
    feats = vlm.patch_features(pixels.flatten(0, 1)).unflatten(0, (2, 3))
    ours = vlm.logits(feats, ids, mask)
    with torch.no_grad():
        theirs = vlm.flamingo(pixels[:, :, None], ids, attention_mask=mask).logits
    real = mask.bool()
    assert torch.allclose(ours[real], theirs[real], atol=1e-5)
    other_context = vlm.logits(torch.cat([feats[:, :2].flip(0), feats[:, 2:]], dim=1), ids, mask)
    assert not torch.allclose(other_context[real], ours[real])  # the context images are read
    cached = vlm.generate(feats, prompts, max_new_tokens=6)
    assert cached == vlm.generate(feats, prompts, max_new_tokens=6, use_cache=False)
    with pytest.raises(ValueError, match="exactly 3"):
        vlm.answer_loss(feats, [vlm.prompt("car")] * 2, [" [1,2,3,4]"] * 2)


def test_lm_prefix_is_words_after_the_image(vlm):
    """An lm_prefix that holds the embeddings of some words gives exactly what writing those words
    right after <image> gives - in the loss, and in cached and uncached batched decoding."""
    words = " red apple "
    word_ids = vlm.tokenizer(words, add_special_tokens=False)["input_ids"]
    prefix = vlm.lm_input_embeddings.weight[word_ids].clone()
    feats, prompts, answers = batch(vlm, 3)
    prompts[1] = vlm.prompt("traffic light dog")  # rows of different lengths: padding around the slots
    literal = [p.replace("<image>", "<image>" + words) for p in prompts]
    lit_ids = vlm._prompt_ids(literal)
    slot_ids = vlm._prompt_ids(prompts, n_slots=len(word_ids))
    for a, b in zip(lit_ids, slot_ids):  # same sequence, the words' ids where the slots are
        assert [x if y == -1 else y for x, y in zip(a, b)] == a and b.count(-1) == len(word_ids)
    with torch.no_grad():
        ours = vlm.answer_loss(feats, prompts, answers, lm_prefix=prefix)
        theirs = vlm.answer_loss(feats, literal, answers)
    assert torch.allclose(ours, theirs, atol=1e-6)
    want = vlm.generate(feats, literal, max_new_tokens=8)
    assert vlm.generate(feats, prompts, max_new_tokens=8, lm_prefix=prefix) == want
    assert vlm.generate(feats, prompts, max_new_tokens=8, lm_prefix=prefix, use_cache=False) == want
    assert not vlm.lm_input_embeddings._forward_hooks  # the hook is gone after each call
    with pytest.raises(ValueError, match="lm_prefix must be"):
        vlm.answer_loss(feats, prompts, answers, lm_prefix=torch.zeros(2, 5))


def test_fusion_tokens_join_the_perceiver_input(vlm):
    feats, _, _ = batch(vlm, 2)
    tokens = torch.randn(3, vlm.site.width)
    with torch.no_grad():
        ours = vlm.fuse(feats, fusion_tokens=tokens)
        theirs = vlm.flamingo.perceiver(torch.cat([feats, tokens.expand(2, 3, -1)], dim=1)[:, None, None])
    assert torch.allclose(ours, theirs)
    with pytest.raises(ValueError, match="fusion_tokens must be"):
        vlm.fuse(feats, fusion_tokens=torch.zeros(3, 5))


@pytest.mark.parametrize("name", ["pin", "vpt_fusion", "vpt_vision", "coop_llm", "lora_vision"])
def test_every_trained_method_on_openflamingo(name, tiny_files, train_method_steps):
    """Each baseline on the factory-built OpenFlamingo: gradients reach only the method, the
    model stays bit-identical, the parameter count is the expected one."""
    vlm = load(tiny_files)  # fresh: LoRA is injected into the encoder
    g = torch.Generator().manual_seed(2)
    pixels = torch.randn(4, 3, 32, 32, generator=g)
    _, prompts, answers = batch(vlm)
    method, losses = train_method_steps(vlm, vlm.flamingo, name, pixels, prompts, answers, steps=3)
    expected = {  # width 64, 2 blocks with MLP 256, LM width 64; conftest.TINY_BASELINES
        "pin": 2080 + 64 + 544 + 64 + (16 * 64 + 64),
        "vpt_fusion": 5 * 64, "vpt_vision": 5 * 64, "coop_llm": 3 * 64,
        "lora_vision": 2 * 4 * ((64 + 192) + (64 + 256) + (256 + 64)),
    }
    assert method.n_trainable_params == expected[name]
    assert losses[-1] < losses[0], losses


def test_higher_resolution_interpolates_the_position_embeddings(tiny_files):
    """vlm.image_size (Tab. 3): 32 px -> 64 px doubles the patch grid; the encoder's position
    table is resampled (a constant table stays constant), nothing else changes."""
    from pin.vlm.resolution import interpolate_grid_embedding

    vlm = load(tiny_files)
    visual = vlm.flamingo.vision_encoder
    cls_row = visual.positional_embedding[0].clone()
    assert vlm.input_size == 32
    vlm.set_image_size(64)
    assert vlm.site.grid == 8 and vlm.site.n_positions == 64 and vlm.input_size == 64
    assert torch.equal(visual.positional_embedding[0], cls_row) and not visual.positional_embedding.requires_grad
    from PIL import Image

    pixels = vlm.preprocess([Image.new("RGB", (100, 80), "red")])
    assert pixels.shape == (1, 3, 64, 64)
    assert vlm.patch_features(pixels).shape == (1, 64, 64)
    table = torch.cat([torch.zeros(1, 4), torch.full((16, 4), 2.5)])
    assert torch.allclose(interpolate_grid_embedding(table, 7), torch.cat([torch.zeros(1, 4), torch.full((49, 4), 2.5)]))
    assert torch.equal(interpolate_grid_embedding(table, 4), table)
    from pin.errors import PinError

    with pytest.raises(PinError, match=r"vlm\.image_size=60: must be a multiple of the vision encoder's patch size 8"):
        vlm.set_image_size(60)
    with pytest.raises(PinError, match=r"vlm\.image_size=8: too small"):
        vlm.set_image_size(8)
