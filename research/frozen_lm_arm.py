"""The mini-VLM issue's last arm: Flamingo's recipe in miniature.

1. A text-only language model: a fresh mini VLM whose cross-attention gates stay closed
   (tanh(0) = 0: the image adds exactly nothing) learns the pretraining texts with its LM
   parameters only. It learns the texts' grammar and their answer prior, never the image.
2. The LM is then frozen, the gates start closed, and only the perceiver and the gated
   cross-attention learn from the same image texts (the stage's own batches and loop,
   ``pin.vlm.pretrain.pretrain_language`` with ``train=``).

The vision tower is the donor's (a pipeline-pretrained mini VLM with the same recipe), so the arm
differs from the donor only on the language side. The result is a mini VLM folder that the pipeline
installs with ``-S pretrain.source=asset -S pretrain.asset=OUT``.

    python research/frozen_lm_arm.py --donor models/mini_vlm --composed data/composed \\
        --text-steps 1000 --image-steps 3000 --out lab/frozen_lm
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pin.vlm.mini import build_mini_flamingo, load_mini_parts, read_mini_config, save_mini  # noqa: E402
from pin.vlm.openflamingo import OpenFlamingoAdapter, set_gates  # noqa: E402
from pin.vlm.pretrain import pretrain_language, recognition_report  # noqa: E402
from pin.vlm.pretrain_text import words_of  # noqa: E402
import research.slot_styles  # noqa: E402,F401  registers the research slot styles


def _continue_module():  # its setup helpers: the saved recipe, the cached features and facts
    spec = importlib.util.spec_from_file_location("continue_pretrain", Path(__file__).with_name("continue_pretrain.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--donor", required=True, help="a mini VLM folder: its ViT, recipe and vocabulary are kept")
    ap.add_argument("--composed", default="data/composed")
    ap.add_argument("--text-steps", type=int, default=1000)
    ap.add_argument("--image-steps", type=int, default=3000)
    helpers = _continue_module()
    args = helpers.parse_run_options(ap, argv, seed=0)

    donor, processor, _, donor_config = load_mini_parts(args.donor)
    meta = read_mini_config(args.donor)["meta"]
    before = meta["pretrain_metrics"]
    vocabulary = meta["vocabulary"]
    config = dataclasses.replace(donor_config, gate_init=0.0)
    flamingo, processor, tokenizer = build_mini_flamingo(config, words_of(vocabulary),
                                                         whole_numbers=before["recipe"]["numbers"] == "whole")
    flamingo.vision_encoder.load_state_dict(donor.vision_encoder.state_dict())
    recipe = helpers.saved_recipe(before, args.grid)
    adapter = OpenFlamingoAdapter(flamingo, processor, tokenizer, name="mini")  # freezes everything
    feats, probe_feats, facts, probe_facts = helpers.language_data(adapter, config.image_size, args.composed)
    common = dict(lr=args.lr, batch_size=args.batch, recipe=recipe)

    set_gates(flamingo, 0.0)  # closed and untrained: the LM never sees the image in part 1
    t0 = time.perf_counter()
    text = pretrain_language(adapter, flamingo, feats, facts, vocabulary, steps=args.text_steps, seed=args.seed,
                             train=("lm",), **common)
    flamingo.eval()
    text_only = recognition_report(adapter, probe_feats, probe_facts, vocabulary, seed=0, recipe=recipe)
    flamingo.train()
    seeing = pretrain_language(adapter, flamingo, feats, facts, vocabulary, steps=args.image_steps,
                               seed=args.seed + 1, train=("perceiver", "xattn"), **common)
    seconds = time.perf_counter() - t0
    flamingo.eval()
    report = recognition_report(adapter, probe_feats, probe_facts, vocabulary, seed=0, recipe=recipe)
    language = {"steps": args.text_steps + args.image_steps, "final_loss": round(seeing.final_loss, 4),
                "arm": "frozen text LM", "text_only": {"steps": args.text_steps, "final_loss": round(text.final_loss, 4),
                                                       "trains": "lm", "gates": "closed"},
                "image": {"steps": args.image_steps, "trains": "perceiver, xattn", "lm": "frozen"},
                "batch": args.batch, "lr": args.lr, "seed": args.seed}
    metrics = {**before, "language": language, "recognition_heldout": report,
               "recognition_heldout_text_only": text_only}
    save_mini(args.out, flamingo, tokenizer, config, meta={**meta, "pretrain_metrics": metrics})
    print(json.dumps({"out": args.out, "language": language, "seconds": round(seconds),
                      "text_only": text_only, "recognition": report}), flush=True)


if __name__ == "__main__":
    main()
