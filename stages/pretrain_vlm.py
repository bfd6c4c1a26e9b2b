"""DVC stage `pretrain_vlm`: the offline mini VLM, pretrained with image-level texts only.

Stands in for OpenFlamingo's web-scale caption pretraining (no VLM weights can be downloaded
offline). Reads data/composed/pretrain (images of every category, train and held-out, as a web
corpus would hold), writes models/mini_vlm (safetensors + JSON config + tokenizer).
With ``pretrain.source=asset`` (the default) it installs the shipped assets/mini_vlm instead -
the same recipe pretrained longer on a GPU by scripts/build_mini_vlm.py - after checking that
it knows exactly this data's categories, and measures its recognition again here.
"""
from __future__ import annotations

from pin import params
from pin.stage import run_stage
from pin.vlm.pretrain import run_pretrain


def main() -> str:
    raw = params.load_yaml()
    grid = params.parse_section("compose", raw.get("compose")).grid
    return run_pretrain(params.parse_section("pretrain", raw.get("pretrain")), grid=grid)


if __name__ == "__main__":
    run_stage("pretrain_vlm", main)
