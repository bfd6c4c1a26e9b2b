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
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pin.composed import read_split_records  # noqa: E402
from pin.frame import FRAME  # noqa: E402
from pin.vlm.mini import load_mini_parts, read_mini_config, save_mini  # noqa: E402
from pin.vlm.openflamingo import OpenFlamingoAdapter  # noqa: E402
from pin.vlm.pretrain import (facts_of, features_of, pixels_uint8, pretrain_language,  # noqa: E402
                              recognition_report)
from pin.vlm.pretrain_text import TextRecipe  # noqa: E402


def saved_recipe(metrics: dict, grid: int) -> TextRecipe:
    """The text recipe a saved mini VLM was pretrained with (its ``pretrain_metrics``)."""
    return TextRecipe(mix=tuple(metrics["recipe"]["text_mix"].items()), slot=metrics["recipe"]["slot"],
                      frame=FRAME, cell=FRAME // grid)


def language_data(adapter, image_size: int, composed: str):
    """Cached ViT features and object facts of the pretrain split, and of 256 held-out probe images."""
    images = read_split_records(Path(composed) / "pretrain")
    probe = read_split_records(Path(composed) / "heldout", limit=256)
    feats, probe_feats = (features_of(adapter, pixels_uint8(image_size, ims)) for ims in (images, probe))
    return feats, probe_feats, [facts_of(im) for im in images], [facts_of(im) for im in probe]


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

    flamingo, processor, tokenizer, config = load_mini_parts(args.model)
    meta = read_mini_config(args.model)["meta"]
    before = meta["pretrain_metrics"]
    recipe = saved_recipe(before, args.grid)
    vocabulary = meta["vocabulary"]
    adapter = OpenFlamingoAdapter(flamingo, processor, tokenizer, name="mini")  # freezes everything
    feats, probe_feats, facts, probe_facts = language_data(adapter, config.image_size, args.composed)
    t0 = time.perf_counter()
    lang = pretrain_language(adapter, flamingo, feats, facts, vocabulary, steps=args.steps, lr=args.lr,
                             batch_size=args.batch, seed=args.seed, recipe=recipe)
    seconds = time.perf_counter() - t0
    flamingo.eval()
    report = recognition_report(adapter, probe_feats, probe_facts, vocabulary, seed=0,
                                recipe=recipe)
    steps_before = before["language"]["steps"]
    language = {"steps": steps_before + args.steps, "final_loss": round(lang.final_loss, 4),
                "segments": before["language"].get("segments", [{"steps": steps_before, "batch": None, "seed": 0}])
                + [{"steps": args.steps, "batch": args.batch, "lr": args.lr, "seed": args.seed,
                    "from": str(args.model)}]}
    metrics = {**before, "language": language, "recognition_heldout": report}
    save_mini(args.out, flamingo, tokenizer, config, meta={**meta, "pretrain_metrics": metrics})
    print(json.dumps({"out": args.out, "language": language, "seconds": round(seconds),
                      "recognition_before": before.get("recognition_heldout"), "recognition_after": report}),
          flush=True)


if __name__ == "__main__":
    main()
