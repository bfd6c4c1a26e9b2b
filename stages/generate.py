"""DVC stage `generate`: single-object pictures + manifest in data/objects (params: generate).

    python stages/generate.py                       # one process
    accelerate launch stages/generate.py            # several GPUs (diffusers backend)
    python stages/generate.py --shard 3/8           # job 3 of 8 independent jobs (a SLURM array task)
    python stages/generate.py --merge 8             # data/objects from the 8 shards, as one run

Shards go to data/objects_shards/<i>-of-<K>/ (pin.synth.generate_shards); docs/profiles.md shows
the SLURM recipe and the `dvc commit generate` that follows the merge.
"""
from __future__ import annotations

import sys

from pin import params
from pin.errors import PinError
from pin.stage import run_stage
from pin.synth.generate import run_generate

USAGE = "usage: python stages/generate.py [--shard i/K | --merge K]"


def main() -> str:
    args = sys.argv[1:]
    if not args:
        return run_generate(params.load("generate"), "data/objects").summary()
    from pin.synth.generate_shards import merge_shards, parse_shard, run_shard

    if len(args) != 2 or args[0] not in ("--shard", "--merge"):
        raise PinError(USAGE)
    p = params.load("generate")
    if args[0] == "--shard":
        return run_shard(p, parse_shard(args[1])).summary()
    try:
        k = int(args[1])
    except ValueError:
        raise PinError(f"--merge: K must be a whole number (got {args[1]!r})") from None
    return merge_shards(p, k).summary()


if __name__ == "__main__":
    run_stage("generate", main)
