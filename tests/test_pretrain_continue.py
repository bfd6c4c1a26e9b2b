"""Continued language pretraining (pin.vlm.pretrain_continue), as scripts/build_mini_vlm.py --then
uses it to build the shipped asset: one more recorded segment per run, the vision tower kept."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from pin.params import parse_section
from pin.vlm.mini import load_mini_parts
from pin.vlm.pretrain import pretrain_mini
from pin.vlm.pretrain_continue import continue_language
from tests.test_pretrain_asset import image

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def tiny(**kw):
    return parse_section("pretrain", {"source": "train", "vision_steps": 2, "lm_steps": 3, "batch_size": 4,
                                      "image_size": 16, "vision_width": 16, "vision_layers": 1, "lm_width": 16,
                                      "lm_layers": 2, "slot": "appearance", "numbers": "digits",
                                      "vision_levels": False, **kw})


@pytest.fixture()
def base(tmp_path):
    images, probe = [image(i, ["dog"] if i % 2 else ["cup", "dog"]) for i in range(6)], [image(9, ["cup"])]
    pretrain_mini(tiny(), images, probe, str(tmp_path / "base"), str(tmp_path / "base.json"))
    return tmp_path / "base", images, probe


def files(folder):
    return {f.name: f.read_bytes() for f in sorted(Path(folder).iterdir())}


def test_each_continuation_is_one_more_segment_and_keeps_the_vision_tower(tmp_path, base):
    model, images, probe = base
    before = files(model)
    first = continue_language(model, tmp_path / "a", images, probe, steps=2, seed=1, batch_size=4, label="base")
    second = continue_language(tmp_path / "a", tmp_path / "b", images, probe, steps=4, seed=2, batch_size=4)
    assert files(model) == before  # the starting point is read, never written
    meta = json.loads((tmp_path / "b" / "mini_vlm.json").read_text())["meta"]["pretrain_metrics"]
    assert meta["language"]["steps"] == 3 + 2 + 4 == second["language"]["steps"]
    assert [(s["steps"], s["seed"]) for s in meta["language"]["segments"]] == [(3, 0), (2, 1), (4, 2)]
    assert meta["language"]["segments"][1]["from"] == "base" and meta["recognition_heldout"] == second["recognition_after"]
    assert first["recognition_after"] == second["recognition_before"]
    old, new = load_mini_parts(model)[0], load_mini_parts(tmp_path / "b")[0]
    for (k, a), (_, b) in zip(old.vision_encoder.state_dict().items(), new.vision_encoder.state_dict().items()):
        assert torch.equal(a, b), k
    assert not torch.equal(old.lang_encoder.get_input_embeddings().weight, new.lang_encoder.get_input_embeddings().weight)


def test_continuing_in_place_writes_what_a_new_folder_gets(tmp_path, base):
    # build_mini_vlm.py --then continues assets/mini_vlm in place; the research tool writes a new folder
    model, images, probe = base
    continue_language(model, tmp_path / "new", images, probe, steps=2, seed=1, batch_size=4, label="x")
    continue_language(model, model, images, probe, steps=2, seed=1, batch_size=4, label="x")
    assert files(model) == files(tmp_path / "new")


def test_build_script_reads_steps_and_seed_pairs():
    spec = importlib.util.spec_from_file_location("build_mini_vlm", ROOT / "scripts" / "build_mini_vlm.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build._phase("6000:1") == (6000, 1)
    for bad in ("6000", "0:1", "x:1", "6000:y"):
        with pytest.raises(Exception, match="STEPS:SEED"):
            build._phase(bad)


def _write_split(folder: Path, images) -> None:
    from pin.synth.shards import write_shard

    write_shard(folder / "part-00000.parquet", [
        {"image_id": im.image_id, "image": im.image, "format": "jpeg", "width": im.width, "height": im.height,
         "background": "test", "seed": im.image_id,
         "objects": [{"category": o.category, "box": list(o.box), "grid_box": list(o.grid_box), "referral": o.referral,
                      "source": "test", "appearance": list(o.appearance)} for o in im.objects]}
        for im in images])


def test_build_from_a_saved_model_writes_what_one_go_writes(tmp_path):
    # the shipped asset grew by --from: its bytes, history included, must be the one-go build's
    spec = importlib.util.spec_from_file_location("build_mini_vlm", ROOT / "scripts" / "build_mini_vlm.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    _write_split(tmp_path / "composed" / "pretrain", [image(i, ["dog"] if i % 2 else ["cup", "dog"]) for i in range(6)])
    _write_split(tmp_path / "composed" / "heldout", [image(9, ["cup"])])
    raw = {"source": "train", "vision_steps": 2, "lm_steps": 3, "batch_size": 4, "image_size": 16, "vision_width": 16,
           "vision_layers": 1, "lm_width": 16, "lm_layers": 2, "slot": "appearance", "numbers": "digits",
           "vision_levels": False}
    (tmp_path / "params.yaml").write_text(json.dumps({"threads": 1, "compose": {"grid": 8}, "pretrain": raw}))
    common = ["--params", str(tmp_path / "params.yaml"), "--composed", str(tmp_path / "composed"), "--threads", "1"]
    build.main(["train", *common, "--out", str(tmp_path / "one"), "--then", "2:1", "--then", "2:2"])
    build.main(["train", *common, "--out", str(tmp_path / "half"), "--then", "2:1"])
    build.main(["train", *common, "--from", str(tmp_path / "half"), "--out", str(tmp_path / "rest"), "--then", "2:2"])
    assert files(tmp_path / "one") == files(tmp_path / "rest")
    meta = json.loads((tmp_path / "rest" / "mini_vlm.json").read_text())["meta"]["pretrain_metrics"]["language"]
    assert [s.get("from") for s in meta["segments"]] == [None, "segment 0", "segment 1"]
    with pytest.raises(SystemExit, match="--then"):
        build.main(["train", *common, "--from", str(tmp_path / "half"), "--out", str(tmp_path / "x")])
