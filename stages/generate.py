"""DVC stage `generate`: single-object pictures + manifest in data/objects (params: generate).

    python stages/generate.py                       # one process
    accelerate launch stages/generate.py            # several GPUs (diffusers backend)
"""
from __future__ import annotations

from pin import params
from pin.stage import run_stage
from pin.synth.generate import run_generate


def main() -> str:
    return run_generate(params.load("generate"), "data/objects").summary()


if __name__ == "__main__":
    run_stage("generate", main)
