"""Continue the language pretraining of a saved mini VLM: more texts for the same model.

Name binding (yes/no on held-out images) needs about a million texts, and one 1-thread CPU
core writes ~135 texts/s (research/pretrain_language.py). A pipeline run that pretrained 3,000 x 64
texts can be continued here instead of starting again: the stage's own text batches and
language loop (``pin.vlm.pretrain.pretrain_language``), with a seed that draws new batches, and
a fresh one-cycle schedule (a warm restart - say so when quoting a number). The vision tower,
the recipe and the vocabulary are the saved model's. The result is a mini VLM folder that the
pipeline installs with ``-S pretrain.source=asset -S pretrain.asset=OUT``.

    python research/continue_pretrain.py --model models/mini_vlm --composed data/composed \\
        --steps 6000 --out lab/continued/shapes_9k
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pin.composed import read_split_records  # noqa: E402
from pin.vlm.pretrain import facts_of, features_of, pixels_uint8  # noqa: E402
from pin.vlm.pretrain_continue import continue_language, saved_recipe  # noqa: E402,F401 (saved_recipe: frozen_lm_arm)
import research.slot_styles  # noqa: E402,F401  registers the research slot styles


def language_data(adapter, image_size: int, composed: str):
    """Cached ViT features and object facts of the pretrain split, and of 256 held-out probe images."""
    images, probe = _records(composed)
    feats, probe_feats = (features_of(adapter, pixels_uint8(image_size, ims)) for ims in (images, probe))
    return feats, probe_feats, [facts_of(im) for im in images], [facts_of(im) for im in probe]


def _records(composed: str):
    return read_split_records(Path(composed) / "pretrain"), read_split_records(Path(composed) / "heldout", limit=256)


def parse_run_options(ap: argparse.ArgumentParser, argv, *, seed: int, seed_help: str | None = None):
    """The options every language-pretraining tool here shares; parses, then sets threads and seed."""
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=seed, help=seed_help)
    ap.add_argument("--grid", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    return args


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a mini VLM folder (pretrain_vlm's models/mini_vlm)")
    ap.add_argument("--composed", default="data/composed", help="the composed data it was pretrained on")
    ap.add_argument("--steps", type=int, required=True)
    args = parse_run_options(ap, argv, seed=1, seed_help="the first run used pretrain.seed (0): another seed, new batches")

    images, probe = _records(args.composed)
    result = continue_language(args.model, args.out, images, probe, steps=args.steps, seed=args.seed, lr=args.lr,
                               batch_size=args.batch, grid=args.grid)
    print(json.dumps({"out": args.out, **result}), flush=True)


if __name__ == "__main__":
    main()
