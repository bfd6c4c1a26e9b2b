"""Library defaults that stand for a pipeline param equal params.yaml, and the 224-px frame has
one home (pin/frame.py): test_params checks the params models' own defaults, this the library's."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import yaml

from pin.boxes import BoxCodec
from pin.check_weights import PROBE_SIZE
from pin.frame import FRAME
from pin.train import train_method
from pin.vlm.pretrain_text import TEXT_MIX, TextRecipe

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def test_library_defaults_are_the_committed_params():
    recipe = TextRecipe()
    assert TEXT_MIX == PARAMS["pretrain"]["text_mix"] and dict(recipe.mix) == TEXT_MIX
    assert recipe.slot == PARAMS["pretrain"]["slot"]
    assert recipe.cell * PARAMS["compose"]["grid"] == recipe.frame == FRAME
    default = inspect.signature(train_method).parameters["checkpoint_every"].default
    assert default == PARAMS["train"]["checkpoint_every"]


def test_the_frame_has_one_home():
    assert BoxCodec(8).frame == PROBE_SIZE == FRAME
    # a default or constant spelled 224 outside pin/frame.py would drift from it
    literal = re.compile(r"(=|:)\s*224\b")
    found = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "pin").rglob("*.py") if p.name != "frame.py"
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if literal.search(line.split("#")[0]) and not line.lstrip().startswith(("#", '"', "'"))]
    assert not found, f"224 written out instead of pin.frame.FRAME: {found}"
