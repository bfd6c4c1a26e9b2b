"""DVC stage `train`: a PositionalInsert for the frozen VLM (params: vlm, pin, train, compose.grid).

    python stages/train.py                 # CPU or one GPU
    accelerate launch stages/train.py      # several GPUs, same result
"""
from __future__ import annotations

from pin import params
from pin.stage import run_stage
from pin.train import run_train


def main() -> str:
    raw = params.load_yaml()
    grid = params.parse_section("compose", raw.get("compose")).grid
    return run_train(params.parse_section("vlm", raw.get("vlm")), params.parse_section("pin", raw.get("pin")),
                     params.parse_section("train", raw.get("train")), grid)


if __name__ == "__main__":
    run_stage("train", main)
