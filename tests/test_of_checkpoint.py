"""OpenFlamingo checkpoints in the released format (trainable weights only, no alias names,
``module.`` prefix, ``model_state_dict`` wrapper) load through ``OpenFlamingoAdapter.from_pretrained``;
checkpoints whose fusion weights are really absent are refused."""
from __future__ import annotations

import logging

import pytest
import torch

torch.set_num_threads(1)

from tiny_of import CLIP_NAME, build_flamingo, released_state_dict, write_clip, write_llama  # noqa: E402

from pin.errors import PinError  # noqa: E402
from pin.vlm.of_checkpoint import is_fusion_name, not_loaded  # noqa: E402
from pin.vlm.openflamingo import OpenFlamingoAdapter  # noqa: E402

ALIAS = "lang_encoder.gated_cross_attn_layers."
XATTN = "lang_encoder.model.layers.{}.gated_cross_attn_layer."  # Llama's decoder layers


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("of_ckpt")
    clip = write_clip(root)
    write_llama(root / "lm")
    flamingo = build_flamingo(root / "lm", clip)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # trained-looking fusion weights, far from any fresh init
        for name, p in flamingo.named_parameters():
            if is_fusion_name(name):
                p.add_(torch.randn(p.shape, generator=g))
    return root, clip, flamingo


@pytest.fixture(scope="module")
def released(files):
    return released_state_dict(files[2])


def load(files, checkpoint):
    root, clip, _ = files
    return OpenFlamingoAdapter.from_pretrained(checkpoint, root / "lm", clip_model=CLIP_NAME,
                                               clip_pretrained=str(clip))


def save(tmp_path, obj, name="checkpoint.pt"):
    torch.save(obj, tmp_path / name)
    return tmp_path / name


def test_the_released_format_holds_no_aliases_and_fails_a_name_count(files, released):
    """The filter keeps the perceiver, the cross-attention blocks under the decoder layers and the
    embeddings only; plain ``load_state_dict`` then reports the alias names as missing."""
    assert all(is_fusion_name(k) or "embed" in k or k == "lang_encoder.lm_head.weight" for k in released)
    assert not any(k.startswith((ALIAS, "vision_encoder.")) for k in released)
    assert any(k.startswith("perceiver.") for k in released)
    assert any(k.startswith(XATTN.format(1)) for k in released)
    fresh = build_flamingo(files[0] / "lm", files[1], seed=5)
    missing, _ = fresh.load_state_dict(released, strict=False)
    aliases = [k for k in missing if "gated_cross_attn" in k]
    assert aliases and all(k.startswith(ALIAS) for k in aliases)  # what the old name count refused
    assert not_loaded(fresh, released) == []


@pytest.mark.parametrize("layout", ["plain", "module_prefix", "training_wrapper", "wrapper_and_prefix"])
def test_released_checkpoint_loads_the_saved_fusion_weights(files, released, tmp_path, layout, caplog):
    state = dict(released)
    if "prefix" in layout:
        state = {f"module.{k}": v for k, v in state.items()}
    if "wrapper" in layout:  # open_flamingo's save_checkpoint layout
        state = {"epoch": 2, "model_state_dict": state, "optimizer_state_dict": {"state": {}, "param_groups": []}}
    with caplog.at_level(logging.WARNING):
        vlm = load(files, save(tmp_path, state))
    assert not caplog.records  # cleanly: not even the missing-embedding warning
    loaded = vlm.flamingo.state_dict()
    fresh = build_flamingo(files[0] / "lm", files[1], seed=5).state_dict()
    fusion = [k for k in released if is_fusion_name(k)]
    assert len(fusion) > 20
    for k in fusion:
        assert torch.equal(loaded[k], released[k]), k
        assert not torch.equal(fresh[k], released[k]), k  # a fresh init would not pass
        if k.startswith(XATTN.format(1)):  # the alias of the same block sees the same tensor
            alias = ALIAS + "1." + k.removeprefix(XATTN.format(1))
            assert torch.equal(loaded[alias], released[k]), alias
    embed = "lang_encoder.model.embed_tokens.weight"
    assert torch.equal(loaded[embed], released[embed])


def test_the_old_full_state_dict_still_loads(files, tmp_path):
    full = files[2].state_dict()
    vlm = load(files, save(tmp_path, full))
    loaded = vlm.flamingo.state_dict()
    assert loaded.keys() == full.keys()
    assert all(torch.equal(loaded[k], full[k]) for k in full)


@pytest.mark.parametrize("drop", ["perceiver.", XATTN.format(1), XATTN.format(0) + "ff_gate"])
def test_absent_fusion_weights_are_refused(files, released, tmp_path, drop):
    state = {k: v for k, v in released.items() if not k.startswith(drop)}
    assert len(state) < len(released)
    with pytest.raises(PinError, match="not an OpenFlamingo checkpoint for this model: .* fusion weights missing"
                       ) as err:
        load(files, save(tmp_path, {"model_state_dict": {f"module.{k}": v for k, v in state.items()}}))
    assert drop.split(".")[0] in str(err.value) or "gated_cross_attn" in str(err.value)
    n = len(released) - len(state)
    assert f": {n} fusion weights missing" in str(err.value)  # counted once per tensor, not per alias


def test_missing_embeddings_load_with_a_warning(files, released, tmp_path, caplog):
    state = {k: v for k, v in released.items() if "embed" not in k}
    with caplog.at_level(logging.WARNING, logger="pin.vlm.of_checkpoint"):
        load(files, save(tmp_path, state))
    assert not caplog.records  # the tied output head is the same tensor: the rows did load
    state.pop("lang_encoder.lm_head.weight")
    with caplog.at_level(logging.WARNING, logger="pin.vlm.of_checkpoint"):
        load(files, save(tmp_path, state))
    assert "no LM input embedding" in caplog.text


def test_malformed_checkpoints_name_the_problem(files, released, tmp_path):
    with pytest.raises(PinError, match="not a state dict"):
        load(files, save(tmp_path, [1, 2, 3]))
    with pytest.raises(PinError, match="not tensors"):
        load(files, save(tmp_path, {"model_state_dict": {"perceiver.latents": 3}}))
    wrong = dict(released, **{"perceiver.latents": torch.zeros(2, 2)})
    with pytest.raises(PinError, match="does not fit this model"):
        load(files, save(tmp_path, wrong))
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(PinError, match=r"junk\.pt: damaged or truncated weights file \(UnpicklingError: "):
        load(files, tmp_path / "junk.pt")


def test_openflamingo_3b_layout_with_a_mosaic_gpt_lm(files, tmp_path):
    """OpenFlamingo-3B's layout: a mosaic_gpt LM folder (MPT-1B's on-disk format, built by our native
    MPT) and a checkpoint holding exactly the released key families, ``module.``-prefixed."""
    from rehearsal.mosaic_standin import write_tiny_mosaic_gpt

    lm = write_tiny_mosaic_gpt(tmp_path / "anas-awadalla" / "mpt-1b-redpajama-200b-dolly")
    flamingo = build_flamingo(lm, files[1])
    with torch.no_grad():
        for name, p in flamingo.named_parameters():
            if is_fusion_name(name):
                p.add_(0.5)
    released = released_state_dict(flamingo)
    # the remote-code MosaicGPT had no lm_head module (its output layer reads wte): the real file
    # holds no such name; the native model's tied head is the same tensor as wte
    released.pop("lang_encoder.lm_head.weight", None)
    families = {"perceiver" if k.startswith("perceiver.") else
                "xattn" if k.startswith("lang_encoder.transformer.blocks.") and ".gated_cross_attn_layer." in k
                else k for k in released}
    assert families == {"perceiver", "xattn", "lang_encoder.transformer.wte.weight"}
    ckpt = save(tmp_path, {f"module.{k}": v for k, v in released.items()})
    vlm = OpenFlamingoAdapter.from_pretrained(ckpt, lm, clip_model=CLIP_NAME, clip_pretrained=str(files[1]))
    loaded = vlm.flamingo.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in released.items())
    assert torch.equal(loaded["lang_encoder.lm_head.weight"], released["lang_encoder.transformer.wte.weight"])
    partial = {k: v for k, v in released.items() if ".blocks.1.gated_cross_attn_layer." not in k}
    with pytest.raises(PinError, match="fusion weights missing"):
        OpenFlamingoAdapter.from_pretrained(save(tmp_path, partial, "partial.pt"), lm, clip_model=CLIP_NAME,
                                            clip_pretrained=str(files[1]))
