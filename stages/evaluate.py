"""DVC stage `evaluate@<dataset>`: PIN vs raw / random / constant on one dataset.

    python stages/evaluate.py synthetic
Writes metrics/eval/<dataset>.json, data/predictions/<dataset>.parquet and pictures in metrics/plots.
"""
from __future__ import annotations

import sys

from pin import params
from pin.errors import PinError
from pin.stage import run_stage


def main() -> str:
    from pin.evaluate import run_evaluate
    from pin.insert import PositionalInsert
    from pin.vlm.registry import load_vlm

    if len(sys.argv) != 2:
        raise PinError("usage: python stages/evaluate.py <dataset>")
    raw = params.load_yaml()
    eval_p = params.parse_section("eval", raw.get("eval"))
    grid = params.parse_section("compose", raw.get("compose")).grid
    vlm = load_vlm(params.parse_section("vlm", raw.get("vlm")))
    insert = PositionalInsert.from_pretrained("models/pin").to(vlm.device).eval()
    return run_evaluate(sys.argv[1], eval_p, vlm, insert().detach(), grid)


if __name__ == "__main__":
    run_stage(f"evaluate@{sys.argv[1] if len(sys.argv) > 1 else '?'}", main)
