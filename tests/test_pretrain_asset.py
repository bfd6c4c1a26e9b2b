"""pretrain.source=asset: the shipped mini VLM is installed only onto data it was pretrained for."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pin.composed import ComposedImage, ComposedObject
from pin.errors import PinError
from pin.params import ParamsError, parse_section
from pin.vlm.mini import MiniVLMConfig, build_mini_flamingo, load_mini, save_mini
from pin.vlm.pretrain_stage import install_asset

torch.set_num_threads(1)

SMALL = MiniVLMConfig(image_size=16, patch_size=8, vision_width=16, vision_layers=1, vision_heads=2,
                      lm_width=16, lm_layers=2, lm_heads=2, perceiver_latents=4, perceiver_heads=2,
                      perceiver_dim_head=8, xattn_heads=2, xattn_dim_head=8)


def image(i, names):
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 40 * i % 255, np.uint8)).save(buf, "JPEG")
    # levels as compose.appearance draws them (the default slot reads the corner from them)
    objs = tuple(ComposedObject(n, (0, 0, 16, 16), (0, 0, 4, 4), n, (i % 3, (i + k) % 4)) for k, n in enumerate(names))
    return ComposedImage(i, buf.getvalue(), 32, 32, objs)


@pytest.fixture()
def asset(tmp_path):
    flamingo, _, tok = build_mini_flamingo(SMALL, ["dog", "cup"])
    save_mini(tmp_path / "asset", flamingo, tok, SMALL,
              meta={"vocabulary": ["cup", "dog"], "pretrain_metrics": {"n_parameters": 1, "device": "test",
                                                                       "vision": {"steps": 5, "seconds": 56.5}}})
    return tmp_path / "asset"


def params(asset, **kw):
    return parse_section("pretrain", {"source": "asset", "asset": str(asset), **kw})


def test_install_copies_weights_and_measures_recognition(tmp_path, asset):
    images, probe = [image(0, ["dog"]), image(1, ["cup", "dog"])], [image(2, ["cup"])]
    summary = install_asset(params(asset), images, probe, str(tmp_path / "models" / "mini_vlm"),
                            str(tmp_path / "pretrain.json"))
    assert "installed" in summary
    installed = tmp_path / "models" / "mini_vlm"
    assert (installed / "model.safetensors").read_bytes() == (asset / "model.safetensors").read_bytes()
    load_mini(installed)  # loads
    metrics = json.loads((tmp_path / "pretrain.json").read_text())
    assert metrics["source"].startswith("asset") and metrics["recognition_heldout"]["n_images"] == 1
    assert metrics["vision"] == {"steps": 5}  # the asset build's wall-clock seconds stay out of the metrics


def test_install_refuses_other_categories(tmp_path, asset):
    out = tmp_path / "models" / "mini_vlm"
    out.mkdir(parents=True)
    (out / "keep").write_text("earlier output")
    with pytest.raises(PinError, match=r"unknown here: \['kite'\].*pretrain.source=train"):
        install_asset(params(asset), [image(0, ["kite", "dog"])], [image(1, ["cup"])], str(out),
                      str(tmp_path / "pretrain.json"))
    assert (out / "keep").read_text() == "earlier output"  # nothing replaced on refusal


def test_missing_asset_says_how_to_rebuild(tmp_path):
    with pytest.raises(PinError, match="build_mini_vlm.py"):
        install_asset(params(tmp_path / "nowhere"), [image(0, ["dog"])], [image(1, ["dog"])],
                      str(tmp_path / "m"), str(tmp_path / "p.json"))


def test_text_mix_and_slot_validated_with_key(tmp_path):
    from pin.vlm.pretrain_stage import run_pretrain

    # the kinds are pretrain_text's to know: the stage refuses before it reads a single image
    with pytest.raises(PinError, match=r"pretrain\.text_mix: unknown text kinds \['gossip'\]"):
        run_pretrain(parse_section("pretrain", {"text_mix": {"gossip": 1.0}}), composed_dir=str(tmp_path / "none"))
    with pytest.raises(ParamsError, match=r"pretrain\.slot: unknown slot style 'centre'; registered: .*appearance"):
        parse_section("pretrain", {"slot": "centre"})


def test_pretraining_twice_writes_the_same_bytes_and_times_elsewhere(tmp_path):
    # wall-clock seconds go to the timing file only: the model folder and the metrics are the
    # same bytes on every run (what scripts/kill_anywhere.py compares after its kills)
    from pin.vlm.pretrain import pretrain_mini

    p = parse_section("pretrain", {"source": "train", "vision_steps": 2, "lm_steps": 2, "batch_size": 4,
                                   "image_size": 16, "vision_width": 16, "vision_layers": 1, "lm_width": 16,
                                   "lm_layers": 2})
    images, probe = [image(i, ["dog"] if i % 2 else ["cup", "dog"]) for i in range(6)], [image(9, ["cup"])]

    def run(tag):
        out = tmp_path / tag
        pretrain_mini(p, images, probe, str(out / "mini_vlm"), str(out / "pretrain.json"),
                      timing_path=str(tmp_path / "timing.json"))
        return {f.relative_to(out).as_posix(): f.read_bytes() for f in sorted(out.rglob("*")) if f.is_file()}

    first = run("a")
    assert first == run("b")
    assert b"seconds" not in first["mini_vlm/mini_vlm.json"] and b"seconds" not in first["pretrain.json"]
    timing = json.loads((tmp_path / "timing.json").read_text())["pretrain_vlm"]
    assert set(timing) == {"vision_seconds", "language_seconds"}


def _tiny_train_params(**kw):
    return parse_section("pretrain", {"source": "train", "vision_steps": 2, "lm_steps": 2, "batch_size": 4,
                                      "image_size": 16, "vision_width": 16, "vision_layers": 1, "lm_width": 16,
                                      "lm_layers": 2, **kw})


def test_vision_from_keeps_the_donor_vit_and_trains_the_rest(tmp_path):
    # the from-scratch recipes of the mini-VLM issue: a seeing ViT kept, the language side new
    import research.slot_styles  # noqa: F401  registers the research slot styles (mixed, a recipe of that issue)
    from pin.vlm.mini import load_mini_parts
    from pin.vlm.pretrain import pretrain_mini

    images, probe = [image(i, ["dog"] if i % 2 else ["cup", "dog"]) for i in range(6)], [image(9, ["cup"])]
    donor = tmp_path / "donor"
    pretrain_mini(_tiny_train_params(seed=1), images, probe, str(donor), str(tmp_path / "d.json"))
    p = _tiny_train_params(vision_from=str(donor), latents=8, numbers="whole", slot="mixed")
    pretrain_mini(p, images, probe, str(tmp_path / "new"), str(tmp_path / "n.json"))
    old, _, _, _ = load_mini_parts(donor)
    new, _, tok, config = load_mini_parts(tmp_path / "new")
    for (k, a), (_, b) in zip(old.vision_encoder.state_dict().items(), new.vision_encoder.state_dict().items()):
        assert torch.equal(a, b), k
    assert not torch.equal(old.perceiver.latents, new.perceiver.latents[: old.perceiver.latents.shape[0]])
    assert config.perceiver_latents == 8 and tok.convert_ids_to_tokens(tok(" 112")["input_ids"])[-1] == "112"
    metrics = json.loads((tmp_path / "n.json").read_text())
    assert metrics["vision"]["steps"] == 0 and metrics["vision"]["kept_from"] == str(donor)
    assert metrics["recipe"] == {**metrics["recipe"], "latents": 8, "numbers": "whole", "slot": "mixed"}


def test_vision_from_refuses_another_tower(tmp_path):
    from pin.vlm.pretrain import pretrain_mini

    images, probe = [image(i, ["dog"]) for i in range(4)], [image(9, ["dog"])]
    donor = tmp_path / "donor"
    pretrain_mini(_tiny_train_params(), images, probe, str(donor), str(tmp_path / "d.json"))
    with pytest.raises(PinError, match=r"pretrain\.vision_from: .*vision_width"):
        pretrain_mini(_tiny_train_params(vision_from=str(donor), vision_width=32), images, probe,
                      str(tmp_path / "new"), str(tmp_path / "n.json"))


def test_slot_size_check_never_counts_two_unparsable_answers_as_a_match():
    from pin.vlm.pretrain import _slot_size

    assert _slot_size(" [28,0,84,56]") == (56, 56)
    assert _slot_size(" [56,56,4,1]") is None  # x2 < x1: not a box
    assert _slot_size(" yes") is None  # (a style that is not a box: tests/test_research_slot_styles.py)


def test_language_pretraining_trains_only_the_groups_it_is_given():
    """The frozen-text-LM arm (research/frozen_lm_arm.py): the LM alone with closed gates, then
    the perceiver and cross-attention alone with the LM frozen."""
    from pin.vlm.mini import trainable_for_pretraining
    from pin.vlm.openflamingo import OpenFlamingoAdapter
    from pin.vlm.pretrain import pretrain_language
    from pin.vlm.pretrain_text import ObjectFact, words_of

    torch.manual_seed(0)
    flamingo, proc, tok = build_mini_flamingo(MiniVLMConfig(gate_init=1.0), words_of(["car", "dog"]))
    adapter = OpenFlamingoAdapter(flamingo, proc, tok, name="mini")
    feats = adapter.patch_features(torch.randn(4, 3, 64, 64))
    facts = [[ObjectFact("car", 56, 56, levels=(1, 2))],
             [ObjectFact("dog", 28, 84, levels=(0, 3)), ObjectFact("car", 28, 28, levels=(5, 1))]] * 2
    groups = trainable_for_pretraining(flamingo)

    def changed_by(train):
        before = {k: [p.detach().clone() for p in v] for k, v in groups.items()}
        pretrain_language(adapter, flamingo, feats, facts, ["car", "dog"], steps=3, lr=1e-2, batch_size=4,
                          seed=0, train=train)
        return {k for k, v in groups.items() if any(not torch.equal(a, b) for a, b in zip(before[k], v))}

    assert changed_by(("perceiver", "xattn")) == {"perceiver", "xattn"}
    assert changed_by(("lm",)) == {"lm"}
    assert all(not p.requires_grad for v in groups.values() for p in v)  # frozen again afterwards
    with pytest.raises(ValueError, match="groups among perceiver, xattn, lm"):
        pretrain_language(adapter, flamingo, feats, facts, ["car", "dog"], steps=1, lr=1e-2, batch_size=4,
                          seed=0, train=("vision",))
