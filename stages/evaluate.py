"""DVC stage `evaluate@<dataset>`: the trained method (params `method`, PIN by default) vs raw /
random / constant on one dataset (pin.eval.run).

    python stages/evaluate.py synthetic    # eval.processes=N > 1: relaunched under accelerate
                                           # launch, queries split over N GPUs, the same files
Writes metrics/eval/<dataset>.json, data/predictions/<dataset>.parquet and pictures in metrics/plots.
"""
from __future__ import annotations

import sys

from pin import params
from pin.errors import PinError
from pin.launch import relaunch
from pin.stage import run_stage

METHOD_DIR = "models/pin"  # the train stage's output: whichever method it trained


def main() -> str:
    from accelerate import PartialState

    from pin.categories import set_query_names
    from pin.eval.run import run_evaluate
    from pin.methods import METHODS, load_method
    from pin.vlm.base import resolve_device
    from pin.vlm.registry import load_vlm

    if len(sys.argv) != 2:
        raise PinError("usage: python stages/evaluate.py <dataset>")
    raw = params.load_yaml()
    eval_p = params.parse_section("eval", raw.get("eval"))
    relaunch(eval_p.processes, "eval.processes")
    compose_p = params.parse_section("compose", raw.get("compose"))
    grid = compose_p.grid
    set_query_names(compose_p.query_names)  # the queries say what the training prompts said
    wanted = params.parse_method(raw, METHODS)
    vlm_p = params.parse_section("vlm", raw.get("vlm"))
    # before anything touches a device: under accelerate launch, each process gets its own GPU
    state = PartialState(cpu=resolve_device(vlm_p.device, key="vlm.device").type == "cpu")
    vlm = load_vlm(vlm_p, device=state.device)
    method = load_method(METHOD_DIR, vlm).to(vlm.device)
    if method.name != wanted:
        raise PinError(f"{METHOD_DIR} holds method {method.name!r} but params say method={wanted!r}: "
                       "run the train stage (dvc repro train)")
    return run_evaluate(sys.argv[1], eval_p, vlm, method, grid, state=state if state.num_processes > 1 else None)


if __name__ == "__main__":
    run_stage(f"evaluate@{sys.argv[1] if len(sys.argv) > 1 else '?'}", main)
