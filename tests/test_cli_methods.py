"""The `pin` command for every method: a baseline trained by the train stage (as `dvc exp run -S
method=vpt_fusion` runs it) is used by `pin locate` and `pin info`; `pin similarity` refuses a
method without a positional table in one line; options with fixed values exit 2 on others."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

torch.set_num_threads(1)

from pin import __version__  # noqa: E402
from pin.cli import app  # noqa: E402
from pin.vlm.openflamingo import OpenFlamingoAdapter  # noqa: E402
from stage_runner import PARAMS, run_entry, write_params  # noqa: E402
from test_bad_inputs import composed_train, models  # noqa: E402

runner = CliRunner()
GRID = PARAMS["compose"]["grid"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """models/pin trained as vpt_fusion by stages/train.py on a 4-image composed set (2 steps)."""
    ws = tmp_path_factory.mktemp("ws")
    models(ws)
    composed_train(ws)
    shutil.copytree(ws / "data/composed/train", ws / "data/composed/val")
    write_params(ws, train={"steps": 2, "batch_size": 2, "log_every": 1, "checkpoint_every": 1},
                 baselines={"vpt_tokens": 3})
    raw = yaml.safe_load((ws / "params.yaml").read_text())
    (ws / "params.yaml").write_text(yaml.safe_dump({**raw, "method": "vpt_fusion"}, sort_keys=False))
    code, err, _ = run_entry("train", ws)
    assert code == 0, err
    (ws / "empty.yaml").write_text("{}\n")
    return ws


def test_the_train_stage_saves_a_baseline_in_the_one_format(trained):
    saved = json.loads((trained / "models/pin/config.json").read_text())
    assert saved == {"method": "vpt_fusion", "config": {"tokens": 3}, "grid": GRID}


def test_pin_info_reads_a_trained_baseline(trained):
    res = runner.invoke(app, ["info", str(trained / "models/pin")])
    assert res.exit_code == 0, res.output
    assert "vpt_fusion method" in res.output and f"answers boxes on a {GRID}x{GRID} grid" in res.output
    assert "parameters: 96 (96 trainable)" in res.output  # 3 tokens of the tiny VLM's width 32
    got = json.loads(runner.invoke(app, ["info", str(trained / "models/pin"), "--json"]).output)
    assert (got["method"], got["grid"], got["config"]) == ("vpt_fusion", GRID, {"tokens": 3})


def test_pin_locate_uses_a_trained_baseline(trained, tmp_path, monkeypatch):
    seen = {}

    def generate(self, feats, prompts, **kwargs):
        seen.update(kwargs)
        return [" [56,0,224,112]"]

    monkeypatch.setattr(OpenFlamingoAdapter, "generate", generate)
    photo = tmp_path / "photo.png"
    Image.new("RGB", (448, 224), (30, 120, 200)).save(photo)
    res = runner.invoke(app, ["locate", str(photo), "a dog", "--vlm-path", str(trained / "models/mini_vlm"),
                              "--method", str(trained / "models/pin"), "--params", str(trained / "empty.yaml"),
                              "-o", str(tmp_path / "o.png"), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert (got["method"], got["grid"], got["box"]) == ("vpt_fusion", GRID, [112.0, 0.0, 448.0, 112.0])
    from safetensors.torch import load_file

    assert torch.equal(seen["fusion_tokens"].cpu(), load_file(trained / "models/pin/model.safetensors")["tokens"])


def test_pin_similarity_refuses_a_method_without_a_table_in_one_line(trained, tmp_path):
    res = runner.invoke(app, ["similarity", str(trained / "models/pin"), "-o", str(tmp_path / "s.png")])
    assert res.exit_code == 1 and not (tmp_path / "s.png").exists()
    assert res.output.strip().splitlines() == [res.output.strip()]
    assert "vpt_fusion method has no positional table" in res.output


def test_missing_model_hints_name_the_commands_own_flags(tmp_path):
    res = runner.invoke(app, ["info", str(tmp_path)])
    assert res.exit_code == 1 and "pin info FOLDER" in res.output and "--no-insert" not in res.output
    res = runner.invoke(app, ["similarity", str(tmp_path)])
    assert res.exit_code == 1 and "pin similarity FOLDER" in res.output and "--insert" not in res.output


@pytest.mark.parametrize("args", [
    ["locate", "x.jpg", "dog", "--model", "gpt"],
    ["locate", "x.jpg", "dog", "--fit", "crop"],
    ["locate", "x.jpg", "dog", "--device", "tpu"],
    ["check-weights", "--vlm", "mini"],
    ["check-weights", "--vlm", "blip2", "--device", "gpu"],
])
def test_a_value_outside_an_options_choices_exits_2(args):
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "Invalid value" in res.output


def test_help_lists_the_choices_and_version_prints():
    helps = runner.invoke(app, ["locate", "--help"]).output + runner.invoke(app, ["check-weights", "--help"]).output
    for choices in ("openflamingo|blip2", "resize|letterbox", "auto|cpu|cuda"):
        assert choices in helps
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"pin {__version__}"


def test_the_package_version_has_one_home():
    import tomllib

    from stage_runner import ROOT

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "pin.__version__"}
