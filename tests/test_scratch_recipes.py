"""research/scratch_recipes.py: every named recipe is a valid pretrain section, and the table reads results."""
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from pin.params import parse_section
from pin.vlm.pretrain import text_recipe

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("scratch_recipes", ROOT / "research" / "scratch_recipes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", sorted(_script().RECIPES))
def test_every_recipe_is_a_valid_pretrain_section(name):
    raw = dict(yaml.safe_load((ROOT / "params.yaml").read_text())["pretrain"])
    raw.update(source="train", vision_from="assets/mini_vlm", **_script().RECIPES[name])
    p = parse_section("pretrain", raw)
    text_recipe(p)  # the text kinds too


def test_table_has_one_row_per_result(tmp_path):
    row = {"pin": {"miou": 0.3, "own": 0.3, "other": 0.1, "cx_corr": 0.6, "cy_corr": 0.5, "distinct": 40,
                   "parse": 1.0},
           "raw": {"miou": 0.2}, "shuffled": {"miou": 0.1}, "pin_parameters": 1000,
           "pin_run": {"steps": 600, "lr": 0.003}, "model": "assets/mini_vlm"}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps(row))
    lines = _script().table(tmp_path).splitlines()
    assert len(lines) == 4 and lines[2].startswith("| a |") and "0.300 | 0.200 | 0.100" in lines[2]
