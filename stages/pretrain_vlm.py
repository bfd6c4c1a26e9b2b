"""DVC stage `pretrain_vlm`: the offline mini VLM, pretrained with image-level texts only.

Stands in for OpenFlamingo's web-scale caption pretraining (no VLM weights can be downloaded
offline). Reads data/composed/pretrain (images of every category, train and held-out, as a web
corpus would hold), writes models/mini_vlm (safetensors + JSON config + tokenizer).
"""
from __future__ import annotations

from pin import params
from pin.stage import run_stage
from pin.vlm.pretrain import run_pretrain


def main() -> str:
    return run_pretrain(params.load("pretrain"))


if __name__ == "__main__":
    run_stage("pretrain_vlm", main)
