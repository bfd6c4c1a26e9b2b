"""Throughput of the mini VLM's language pretraining on cached features (texts per second).

The from-scratch recipes of research/scratch_recipes.py spend nearly all their time here, so this
is the number that decides how many recipes a CPU can afford. Random features stand in for the
cached ViT output (the cost does not depend on their values).

    python research/pretrain_language.py --batch 64 128 256 --steps 20 --threads 1
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pin.machine import cpu_name  # noqa: E402
from pin.vlm.mini import MiniVLMConfig, build_mini_flamingo, trainable_for_pretraining  # noqa: E402
from pin.vlm.openflamingo import OpenFlamingoAdapter, masked_answer_loss  # noqa: E402
from pin.vlm.pretrain_text import ObjectFact, TextRecipe, make_text, words_of  # noqa: E402
import research.slot_styles  # noqa: E402,F401  registers the research slot styles

NAMES = [f"thing{i}" for i in range(60)]


def run(batch: int, steps: int, latents: int, xattn_every: int, compile_: bool) -> float:
    torch.manual_seed(0)
    config = MiniVLMConfig(stem="conv", gate_init=1.0, perceiver_latents=latents, xattn_every=xattn_every)
    flamingo, processor, tokenizer = build_mini_flamingo(config, words_of(NAMES))
    adapter = OpenFlamingoAdapter(flamingo, processor, tokenizer, name="mini")
    groups = trainable_for_pretraining(flamingo)
    params = groups["perceiver"] + groups["xattn"] + groups["lm"]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-3)
    feats = torch.randn(batch, 64, config.vision_width)
    rng = random.Random(0)
    recipe = TextRecipe(slot="anywhere")
    logits = adapter.logits
    if compile_:
        logits = torch.compile(adapter.logits)

    def step():
        objs = [[ObjectFact(rng.choice(NAMES), 56, 84)] for _ in range(batch)]
        texts = [make_text(o, NAMES, rng, recipe=recipe) for o in objs]
        ids, mask, labels = adapter.teacher_forcing([t.prompt for t in texts], [t.answer for t in texts])
        loss = masked_answer_loss(logits(feats, ids, mask), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):  # warm-up (and compilation)
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--latents", type=int, default=32)
    ap.add_argument("--xattn-every", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="torch.compile the forward pass")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch threads {args.threads}, latents {args.latents}, "
          f"xattn every {args.xattn_every}, compile {args.compile}")
    for b in args.batch:
        print(f"batch {b:4d}: {run(b, args.steps, args.latents, args.xattn_every, args.compile):7.1f} texts/s",
              flush=True)


if __name__ == "__main__":
    main()
