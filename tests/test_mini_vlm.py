"""The offline "mini" VLM: build, save, load, and the adapter interface on the loaded model;
plus the word-level tokenizer it uses."""
from __future__ import annotations

import json
import os

import pytest
import torch

torch.set_num_threads(1)

from pin.errors import PinError  # noqa: E402
from pin.vlm import mini  # noqa: E402
from pin.vlm.mini import (  # noqa: E402
    MiniVLMConfig,
    build_mini_flamingo,
    count_parameters,
    load_mini,
    load_mini_parts,
    save_mini,
    trainable_for_pretraining,
)
from pin.vlm.openflamingo import OpenFlamingoAdapter, set_gates  # noqa: E402
from pin.vlm.tokenizer import (  # noqa: E402
    END_OF_CHUNK,
    IMAGE,
    SPECIAL_TOKENS,
    build_word_tokenizer,
    load_tokenizer,
    save_tokenizer,
    words_from_names,
)

NAMES = ["car", "dog", "red apple", "traffic light", "t-shirt", "crème brûlée"]
PROMPT_OBJECTS = ["car", "dog", "red apple", "traffic light"]
ANSWERS = [" [14,28,112,98]", " [0,0,224,224]", " [56,42,70,210]", " [7.5,14,21,28]"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    cfg = MiniVLMConfig(gate_init=1.0)  # open gates: a random model must see the image
    flamingo, proc, tok = build_mini_flamingo(cfg, NAMES)
    path = tmp_path_factory.mktemp("mini") / "mini_vlm"
    save_mini(path, flamingo, tok, cfg, meta={"stage": "test"})
    return path, flamingo, proc, tok, cfg


@pytest.fixture(scope="module")
def loaded(saved) -> OpenFlamingoAdapter:
    return load_mini(saved[0])


def fixed_batch(vlm, seed=0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(len(ANSWERS), 3, 64, 64, generator=g)
    return vlm.patch_features(pixels), [vlm.prompt(o) for o in PROMPT_OBJECTS], ANSWERS


# ----------------------------------------------------------------------------- tokenizer
def test_tokenizer_boxes_digits_and_specials(tmp_path):
    tok = build_word_tokenizer(NAMES)
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    box = " [14,28,112.5,98]"
    ids = tok(box, add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["▁", "[", *"14,28,112.5,98", "]"]
    assert tok.decode(ids) == box
    text = IMAGE + "In the image is a red t-shirt located at" + box + END_OF_CHUNK
    ids = tok(text)["input_ids"]
    assert tok.unk_token_id not in ids
    assert ids[0] == tok.convert_tokens_to_ids(IMAGE) and ids[-1] == tok.convert_tokens_to_ids(END_OF_CHUNK)
    assert tok.decode(ids, skip_special_tokens=True) == text.lower().replace(IMAGE, "").replace(END_OF_CHUNK, "")
    assert tok("a zebra", add_special_tokens=False)["input_ids"][-1] == tok.unk_token_id
    save_tokenizer(tok, tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert again(text)["input_ids"] == ids and len(again) == len(tok)
    assert again.decode(again(box, add_special_tokens=False)["input_ids"]) == box


def test_whole_number_tokenizer_makes_each_corner_one_token(tmp_path):
    tok = build_word_tokenizer(NAMES, whole_numbers=True)
    box = " [112,28,224,56]"
    ids = tok(box, add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["▁", "[", "112", ",", "28", ",", "224", ",", "56", "]"]
    assert tok.decode(ids) == box
    assert tok(" 3", add_special_tokens=False)["input_ids"][-1] == tok.convert_tokens_to_ids("3")
    assert tok(" 225", add_special_tokens=False)["input_ids"][-1] == tok.unk_token_id  # above the range
    save_tokenizer(tok, tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert again(box, add_special_tokens=False)["input_ids"] == ids  # the rule travels with the files
    digits = build_word_tokenizer(NAMES)
    assert len(tok) == len(digits) + 215  # 10..224; the default tokenizer is unchanged


def test_words_from_names_and_stable_ids():
    words = words_from_names(["Traffic light", "t-shirt", "bow (weapon)"])
    assert words == ["bow", "light", "shirt", "t", "traffic", "weapon"]
    a = build_word_tokenizer(["dog", "car"]).get_vocab()
    b = build_word_tokenizer(["car", "dog", "car"]).get_vocab()
    assert a == b


# ---------------------------------------------------------------------------- mini VLM
def test_config_validation():
    with pytest.raises(ValueError, match="patch_size"):
        MiniVLMConfig(image_size=60, patch_size=8)
    with pytest.raises(ValueError, match="unknown keys"):
        MiniVLMConfig.from_dict({**MiniVLMConfig().to_dict(), "bogus": 1})
    assert MiniVLMConfig.from_dict(MiniVLMConfig().to_dict()) == MiniVLMConfig()


def test_size_budget(saved):
    path, flamingo, _, _, _ = saved
    n = count_parameters(flamingo)
    info = json.loads((path / "mini_vlm.json").read_text())
    assert info["n_parameters"] == n and info["meta"] == {"stage": "test"}
    assert n < 3_000_000
    assert os.path.getsize(path / "model.safetensors") < 10 * 2**20
    # a realistic vocabulary (~1,300 LVIS words) stays within budget too
    big, _, tok = build_mini_flamingo(MiniVLMConfig(), [f"w{chr(97 + i % 26)}{'x' * (i // 26)}" for i in range(1300)])
    assert len(tok) > 1300 and count_parameters(big) < 3_000_000


def test_build_is_deterministic_and_groups_cover_every_parameter(saved):
    _, flamingo, _, _, cfg = saved
    again, _, _ = build_mini_flamingo(cfg, NAMES)
    a, b = flamingo.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    groups = trainable_for_pretraining(again)
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids)) == len(list(again.parameters()))
    assert all(groups.values())


def test_save_load_round_trip_identical_outputs(saved, loaded):
    path, flamingo, proc, tok, cfg = saved
    built = OpenFlamingoAdapter(flamingo, proc, tok, name="mini")  # freezes the built model
    assert loaded.name == "mini" and loaded.site == built.site
    assert (loaded.site.n_positions, loaded.site.width, loaded.site.grid) == (64, 128, 8)
    assert sorted(os.listdir(path)) == ["mini_vlm.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    pixels = torch.randn(2, 3, 64, 64)
    f1, f2 = built.patch_features(pixels), loaded.patch_features(pixels)
    assert torch.equal(f1, f2)
    prompts = [built.prompt("dog"), built.prompt("traffic light")]
    insert = torch.randn(64, 128)
    l1 = built.answer_loss(f1, prompts, ANSWERS[:2], insert)
    assert torch.equal(l1, loaded.answer_loss(f2, prompts, ANSWERS[:2], insert))
    g1 = built.generate(f1, prompts, insert, max_new_tokens=8)
    assert g1 == loaded.generate(f2, prompts, insert, max_new_tokens=8)
    _, _, _, cfg2 = load_mini_parts(path)
    assert cfg2 == cfg


def test_loaded_insert_trains_and_vlm_stays_bit_identical(loaded):
    before = {k: v.clone() for k, v in loaded.flamingo.state_dict().items()}
    assert all(not p.requires_grad for p in loaded.flamingo.parameters()) and not loaded.flamingo.training
    feats, prompts, answers = fixed_batch(loaded)
    insert = torch.zeros(loaded.site.n_positions, loaded.site.width, requires_grad=True)
    opt = torch.optim.Adam([insert], lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = loaded.answer_loss(feats, prompts, answers, insert)
        loss.backward()
        assert (insert.grad != 0).all()
        opt.step()
        losses.append(loss.item())
    # a random (not yet pretrained) mini VLM moves little, but it must move
    assert losses[-1] < losses[0] - 0.05, losses
    after = loaded.flamingo.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    out = loaded.generate(feats, prompts, insert.detach(), max_new_tokens=6)
    assert len(out) == 4 and all(isinstance(s, str) for s in out)


def test_default_gates_are_closed(tmp_path):
    flamingo, proc, tok = build_mini_flamingo(MiniVLMConfig(vision_layers=1, lm_layers=2), NAMES)
    vlm = OpenFlamingoAdapter(flamingo, proc, tok)
    feats, prompts, answers = fixed_batch(vlm)
    insert = torch.zeros(vlm.site.n_positions, vlm.site.width, requires_grad=True)
    vlm.answer_loss(feats, prompts, answers, insert).backward()
    assert torch.count_nonzero(insert.grad) == 0
    set_gates(vlm.flamingo, 0.5)
    insert.grad = None
    vlm.answer_loss(feats, prompts, answers, insert).backward()
    assert torch.count_nonzero(insert.grad) > 0


def test_save_replaces_atomically(tmp_path, saved, monkeypatch):
    _, flamingo, _, tok, cfg = saved
    target = tmp_path / "m"
    save_mini(target, flamingo, tok, cfg)
    first = (target / "model.safetensors").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(mini, "save_tokenizer", boom)
    with pytest.raises(OSError, match="disk full"):
        save_mini(target, flamingo, tok, cfg)
    assert (target / "model.safetensors").read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folders left
    monkeypatch.undo()
    save_mini(target, flamingo, tok, cfg, meta={"again": True})
    assert json.loads((target / "mini_vlm.json").read_text())["meta"] == {"again": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_missing_or_broken_mini(tmp_path, saved):
    with pytest.raises(PinError, match="mini VLM not found"):
        load_mini(tmp_path / "nothing")
    path = saved[0]
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in path.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    info = json.loads((broken / "mini_vlm.json").read_text())
    info["config"]["lm_layers"] = 3
    (broken / "mini_vlm.json").write_text(json.dumps(info))
    with pytest.raises(PinError, match="does not match"):
        load_mini(broken)


# ----------------------------------------------------------------------------- unknown query words
def test_unknown_words_are_the_ones_read_as_unk(saved, loaded):
    from pin.vlm.tokenizer import UNK

    tok = saved[3]
    # saved without meta.vocabulary: the tokenizer's own words count as known
    assert loaded.unknown_words(["Traffic light", "a red car", "Crème brûlée"]) == []
    assert loaded.unknown_words(["cat", "a fluffy Cat on a car", "dog"]) == ["cat", "fluffy"]
    # exactly the words the tokenizer turns into <unk>
    ids = tok("fluffy cat car", add_special_tokens=False)["input_ids"]
    assert [tok.convert_ids_to_tokens(i) == UNK for i in ids] == [True, False, True, False, False]


def test_mini_vlm_warns_once_naming_the_words_and_where_categories_are(saved, loaded):
    assert loaded.vocabulary_warning(["dog", "traffic light"]) is None
    one = loaded.vocabulary_warning(["cat"])
    assert "'cat'" in one and "1 of 1 query" in one and "guesses" in one
    assert f"pin info {saved[0]}" in one and str(saved[0] / mini.CONFIG_FILE) in one
    # evaluate: one summary over all queries, each unknown word once
    many = loaded.vocabulary_warning(["cat", "dog", "car", "a cat", "zebra"])
    assert "'cat', 'zebra'" in many and "3 of 5 queries" in many


def test_words_the_tokenizer_has_but_pretraining_never_used_are_unknown(tmp_path, saved):
    # "purple" is one of the tokenizer's base words, but no pretraining text (category names and
    # the fixed question words) ever held it: its embedding never learned anything
    _, flamingo, _, tok, cfg = saved
    save_mini(tmp_path / "m", flamingo, tok, cfg, meta={"vocabulary": ["dog", "red apple"]})
    vlm = load_mini(tmp_path / "m")
    assert vlm.categories == ["dog", "red apple"]
    assert vlm.unknown_words(["a red apple", "dog", "is there a dog"]) == []
    assert vlm.unknown_words(["a purple dog", "car", "cat"]) == ["car", "cat", "purple"]


def test_other_vlms_know_every_word(loaded):
    from pin.vlm.base import FrozenVLM

    # a subword tokenizer spells any word: the base interface reports none unknown
    assert FrozenVLM.vocabulary_warning(loaded, ["cat"]) is None and FrozenVLM.unknown_words(loaded, ["cat"]) == []
