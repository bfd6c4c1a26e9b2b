"""DVC stage `train`: the chosen method (params: method, vlm, pin, baselines, train, compose),
PIN by default, on the frozen VLM.

    python stages/train.py                 # CPU or one GPU; train.processes=N > 1: relaunched
                                           # under accelerate launch, N GPUs, the same result

Here params become components (the VLM, a fresh seeded method); :func:`pin.train.run_train`
trains what it is given, as :func:`pin.eval.run.run_evaluate` evaluates what it is given.
"""
from __future__ import annotations

from pin import params
from pin.launch import relaunch
from pin.stage import run_stage


def main() -> str:
    import torch

    from pin.methods import METHODS, build_method
    from pin.train import make_accelerator, run_fingerprint, run_train
    from pin.vlm.base import resolve_device
    from pin.vlm.registry import load_vlm

    raw = params.load_yaml()
    method = params.parse_method(raw, METHODS)
    compose_p = params.parse_section("compose", raw.get("compose"))
    grid = compose_p.grid
    vlm_p, pin_p, train_p, baselines_p = (params.parse_section(s, raw.get(s)) for s in ("vlm", "pin", "train",
                                                                                        "baselines"))
    relaunch(train_p.processes, "train.processes")
    # before anything touches a device: under accelerate launch, each process gets its own GPU
    accelerator = make_accelerator(resolve_device(vlm_p.device, key="vlm.device"))
    vlm = load_vlm(vlm_p, device=accelerator.device)
    torch.manual_seed(train_p.seed)  # the method's initial weights
    trained = build_method(method, vlm, pin_p, baselines_p)
    fp = run_fingerprint(vlm_p, pin_p, train_p, grid, "data/composed", method, baselines_p)
    return run_train(train_p, vlm, trained, grid, fingerprint=fp, accelerator=accelerator, compose_p=compose_p)


if __name__ == "__main__":
    run_stage("train", main)
