"""DVC stage `train`: the chosen method (params: method, vlm, pin, baselines, train, compose.grid),
PIN by default, on the frozen VLM.

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
                     params.parse_section("train", raw.get("train")), grid, method=params.parse_method(raw),
                     baselines_p=params.parse_section("baselines", raw.get("baselines")))


if __name__ == "__main__":
    run_stage("train", main)
