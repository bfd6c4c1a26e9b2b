"""One folder format for every trained method (pin.saved): PIN and the baselines write the same
``{"method", "config", "grid"}`` config.json, one loader reads them all, and PIN folders written in
the older ``{"pin_insert": ...}`` format still load."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save as st_save

torch.set_num_threads(1)

from conftest import TINY_BASELINES, TRAINED_METHODS  # noqa: E402
from pin.errors import PinError  # noqa: E402
from pin.insert import InsertConfig, PositionalInsert  # noqa: E402
from pin.methods import build_method, load_method  # noqa: E402
from pin.methods.pin_method import PinMethod  # noqa: E402
from pin.params import BaselinesParams, InsertParams  # noqa: E402
from pin.saved import read_method, saved_grid  # noqa: E402
from pin.vlm.mini import MiniVLMConfig, build_mini_flamingo  # noqa: E402
from pin.vlm.openflamingo import OpenFlamingoAdapter  # noqa: E402

CFG = MiniVLMConfig(vision_width=16, vision_layers=1, vision_heads=2, lm_width=16, lm_layers=2, lm_heads=2,
                    perceiver_depth=1, perceiver_latents=4, perceiver_heads=2, perceiver_dim_head=8,
                    xattn_heads=2, xattn_dim_head=8, gate_init=1.0)


def fresh_vlm():
    torch.manual_seed(0)
    flamingo, proc, tok = build_mini_flamingo(CFG, ["dog", "cup"])
    return OpenFlamingoAdapter(flamingo, proc, tok, name="mini")


@pytest.fixture(scope="module")
def vlm():
    return fresh_vlm()


@pytest.fixture()
def old_pin_folder(tmp_path, vlm):
    """A PIN folder exactly as the train stage wrote it before the formats were merged."""
    torch.manual_seed(1)
    insert = PositionalInsert(InsertConfig.for_site(vlm.site, layers=1, hidden=(8,)))
    folder = tmp_path / "old_pin"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(st_save({k: v.contiguous() for k, v in insert.state_dict().items()}))
    (folder / "config.json").write_text(json.dumps({"pin_insert": insert.config.to_dict(), "grid": 8}))
    return folder, insert


def _build(name, vlm):
    torch.manual_seed(0)
    return build_method(name, vlm, InsertParams(layers=1, hidden=[8]), BaselinesParams(**TINY_BASELINES))


@pytest.mark.parametrize("name", [*TRAINED_METHODS, "raw", "incontext"])
def test_every_method_writes_the_same_format(name, tmp_path, vlm):
    vlm = fresh_vlm() if name == "lora_vision" else vlm  # LoRA wraps its VLM's layers: one per VLM
    method = _build(name, vlm)
    method.save_pretrained(tmp_path / "m", grid=6)
    info = json.loads((tmp_path / "m" / "config.json").read_text())
    assert set(info) == {"method", "config", "grid"} and info["method"] == name and info["grid"] == 6
    loaded = load_method(tmp_path / "m", fresh_vlm() if name == "lora_vision" else vlm)
    assert type(loaded) is type(method) and loaded.config() == method.config()
    for a, b in zip(method.trainable_state().values(), loaded.trainable_state().values()):
        assert torch.equal(a, b)


def test_an_insert_and_the_pin_method_write_the_same_folder(tmp_path, vlm):
    method = _build("pin", vlm)
    method.save_pretrained(tmp_path / "a", grid=8)
    method.insert.save_pretrained(tmp_path / "b", grid=8)
    for f in ("config.json", "model.safetensors"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    # the VLM-free reader (pin info, pin similarity) and the method loader read one folder
    assert PositionalInsert.from_pretrained(tmp_path / "a").config == method.insert.config


def test_old_pin_folders_still_load(old_pin_folder, vlm):
    folder, insert = old_pin_folder
    saved = read_method(folder)
    assert (saved.method, saved.grid, saved.config) == ("pin", 8, insert.config.to_dict())
    assert saved_grid(folder) == 8
    loaded = load_method(folder, vlm)
    assert isinstance(loaded, PinMethod)
    assert torch.equal(loaded.conditioning()["insert"], insert())
    assert torch.equal(PositionalInsert.from_pretrained(folder)(), insert())


def test_a_folder_for_another_vlm_or_method_is_refused_clearly(tmp_path, vlm):
    PositionalInsert(InsertConfig(n_positions=256, width=1024, layers=1, hidden=(8,))).save_pretrained(tmp_path / "of")
    with pytest.raises(PinError, match="trained for 256 positions of width 1024"):
        load_method(tmp_path / "of", vlm)
    _build("vpt_fusion", vlm).save_pretrained(tmp_path / "vpt")
    with pytest.raises(PinError, match="holds method 'vpt_fusion'"):
        PositionalInsert.from_pretrained(tmp_path / "vpt")
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "config.json").write_text("[1, 2]")
    with pytest.raises(PinError, match="not a trained method"):
        read_method(tmp_path / "list")
    assert saved_grid(tmp_path / "list") is None
    (tmp_path / "vpt" / "config.json").write_text(json.dumps({"method": "vpt_fusion", "config": {"tokens": "x"}}))
    with pytest.raises(PinError, match="cannot rebuild"):
        load_method(tmp_path / "vpt", vlm)
