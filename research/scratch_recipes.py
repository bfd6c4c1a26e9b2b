"""Pretrain the mini VLM's language side from scratch with one text recipe, then train PIN on it
and score it - the research loop of the mini-VLM issue, on the CPU, one recipe per call.

The shipped ViT is kept (``pretrain.vision_from``) and its patch features are cached, so a
recipe costs only the perceiver + cross-attention + LM pretraining (the stage's own code,
``pin.vlm.pretrain.pretrain_mini``) and a PIN run on cached features (the loop of
``research/probe_position.py``). Every number is scored on the held-out split (categories PIN
never trained on) with the evaluation's own box parser.

    python research/scratch_recipes.py --recipe mixed --out lab/recipes/mixed
    python research/scratch_recipes.py --recipe wide -S lm_steps=3000 --pin-steps 1200 --pin-lr 1e-2

``--recipe`` names a row of RECIPES (pretrain params); ``-S key=value`` overrides any pretrain
param on top; ``--model DIR`` skips pretraining and scores an existing mini VLM (e.g. the
shipped asset). Results go to ``OUT/result.json``; the pretrained model to ``OUT/model``.
``--table DIR`` prints the markdown table of every ``DIR/*/result.json`` instead.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pin.composed import read_split_records  # noqa: E402
from pin.insert import InsertConfig, PositionalInsert  # noqa: E402
from pin.machine import cpu_name  # noqa: E402
from pin.params import parse_section  # noqa: E402
from pin.train import compute_features  # noqa: E402
from pin.vlm.mini import load_mini  # noqa: E402
from pin.vlm.pretrain import pixels_uint8, pretrain_mini  # noqa: E402
import research.slot_styles  # noqa: E402,F401  registers the research slot styles

# Pretrain params per recipe, on top of params.yaml's pretrain section (source=train, the
# shipped ViT kept). "shipped" is the committed recipe, from scratch, as the reference row.
RECIPES: dict[str, dict] = {
    "shipped": {},
    "attributes": {"slot": "attributes"},  # the earlier positive control's [w,h,area,count]
    "size": {"slot": "size"},  # corner read from the size: image-determined
    "mixed": {"slot": "mixed"},  # half size-read corners, half free
    "window": {"slot": "window"},  # size-read corner +-1 cell: image-read, no single greedy mode
    "whole": {"numbers": "whole"},  # one token per number
    "mixed_whole": {"slot": "mixed", "numbers": "whole"},
    "wide": {"latents": 64, "xattn_every": 1},  # OpenFlamingo-3B's fusion: 64 latents, xattn every layer
    "mixed_wide": {"slot": "mixed", "latents": 64, "xattn_every": 1},
    "more_slot": {"slot": "mixed", "text_mix": {"caption": 0.15, "exists": 0.2, "count": 0.15, "slot": 0.5}},
    # coarse relations at a real share (reported separately: the only texts that read positions)
    "relation": {"text_mix": {"caption": 0.15, "exists": 0.25, "count": 0.15, "slot": 0.3, "relation": 0.15}},
    "mixed_relation": {"slot": "mixed",
                       "text_mix": {"caption": 0.15, "exists": 0.25, "count": 0.15, "slot": 0.3, "relation": 0.15}},
}


def _probe_module():
    spec = importlib.util.spec_from_file_location("probe_position", Path(__file__).with_name("probe_position.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cached(path: Path, make):
    if path.is_file():
        return torch.load(path, weights_only=False)
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(value, tmp)
    tmp.replace(path)
    return value


def pretrain(args, out: Path) -> tuple[Path, dict, float]:
    raw = dict(yaml.safe_load(Path(args.params).read_text())["pretrain"])
    raw.update(source="train", vision_from=args.vision_from, device="cpu", lm_steps=args.lm_steps)
    raw.update(RECIPES[args.recipe])
    for item in args.set:
        key, _, value = item.partition("=")
        raw[key] = yaml.safe_load(value)
    p = parse_section("pretrain", raw)
    composed = Path(args.composed)
    images = read_split_records(composed / "pretrain", limit=p.max_images)
    probe = read_split_records(composed / "heldout", limit=256)
    pixels = _cached(Path(args.cache) / f"pixels_{p.image_size}.pt",
                     lambda: (pixels_uint8(p.image_size, images), pixels_uint8(p.image_size, probe)))
    t0 = time.perf_counter()
    summary = pretrain_mini(p, images, probe, str(out / "model"), str(out / "pretrain.json"), pixels=pixels)
    seconds = time.perf_counter() - t0
    print(f"[{args.recipe}] {summary} ({seconds:.0f} s)", flush=True)
    return out / "model", {"params": p.model_dump(), **json.loads((out / "pretrain.json").read_text())}, seconds


def score(args, model: Path) -> dict:
    probe = _probe_module()
    vlm = load_mini(model)
    composed = Path(args.composed)
    train = read_split_records(composed / "train", limit=args.max_train)
    held = read_split_records(composed / "heldout")
    # the ViT is shared by every recipe (vision_from), so its features are computed once
    ftr = _cached(Path(args.cache) / f"feats_train_{len(train)}.pt", lambda: compute_features(vlm, train))
    fte = _cached(Path(args.cache) / "feats_heldout.pt", lambda: compute_features(vlm, held))
    res = {"raw": probe.decode_score(vlm, fte, held)}
    torch.manual_seed(args.seed)
    cfg = InsertConfig.for_site(vlm.site)
    if args.pin_layers or args.pin_hidden:
        cfg = InsertConfig.for_site(vlm.site, layers=args.pin_layers or len(args.pin_hidden),
                                    hidden=tuple(args.pin_hidden) if args.pin_hidden else None)
    t0 = time.perf_counter()
    pi, log, _ = probe.train_insert_and(vlm, ftr, train, steps=args.pin_steps, lr=args.pin_lr, xattn_lr=None,
                                        seed=args.seed, insert_config=cfg)
    res["pin_seconds"] = round(time.perf_counter() - t0, 1)
    res["pin_parameters"] = sum(p.numel() for p in PositionalInsert(cfg).parameters())
    res["pin"] = probe.decode_score(vlm, fte, held, pi)
    res["shuffled"] = probe.decode_score(vlm, fte, held, pi, shuffle=True)
    res["pin_run"] = {"steps": args.pin_steps, "lr": args.pin_lr, "layers": cfg.layers, "hidden": cfg.hidden}
    return res


def table(root: Path) -> str:
    """One markdown row per result: PIN and its controls, then what the pretraining reached."""
    head = ("| run | LM pretraining | PIN run | PIN | raw | shuffled | own / other | centre-x / -y corr | distinct "
            "| parse | captions P/R | yes/no | count | size slot |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for path in sorted(root.glob("*/result.json")):
        r = json.loads(path.read_text())
        pin, pre = r["pin"], r.get("pretrain", {})
        rec = pre.get("recognition_heldout", {})
        run = r["pin_run"]
        lm = (f"{pre['language']['steps']} x {pre['params']['lm_batch_size'] or pre['params']['batch_size']}, "
              f"{r['pretrain_seconds'] / 60:.0f} min" if pre else f"`{r.get('model')}`")
        lines.append(
            f"| {path.parent.name} | {lm} | {run['steps']} steps, lr {run['lr']:g}, {r['pin_parameters']:,} params "
            f"| {pin['miou']:.3f} | {r['raw']['miou']:.3f} | {r['shuffled']['miou']:.3f} "
            f"| {pin['own']:.3f} / {pin['other']:.3f} | {pin['cx_corr']:.2f} / {pin['cy_corr']:.2f} "
            f"| {pin['distinct']} | {pin['parse']:.2f} | {rec.get('caption_precision', '-')}/{rec.get('caption_recall', '-')} "
            f"| {rec.get('qa_exists', '-')} | {rec.get('qa_count', '-')} | {rec.get('qa_slot_size', '-')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--table"]:
        print(table(Path(argv[1] if len(argv) > 1 else "lab/recipes")))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="shipped")
    ap.add_argument("-S", "--set", action="append", default=[], help="override a pretrain param: key=value")
    ap.add_argument("--model", help="score this mini VLM folder instead of pretraining one")
    ap.add_argument("--out", required=True)
    ap.add_argument("--lm-steps", type=int, default=3000)
    ap.add_argument("--vision-from", default="assets/mini_vlm")
    ap.add_argument("--pin-steps", type=int, default=600)
    ap.add_argument("--pin-lr", type=float, default=3e-3)
    ap.add_argument("--pin-layers", type=int, default=0)
    ap.add_argument("--pin-hidden", type=int, nargs="*", default=[])
    ap.add_argument("--max-train", type=int, default=8000)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--composed", default="data/composed")
    ap.add_argument("--cache", default="lab/cache")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"recipe": args.recipe, "set": args.set, "threads": args.threads,
                    "cpu": cpu_name()}
    if args.model:
        model = Path(args.model)
        result["model"] = str(model)
    else:
        model, result["pretrain"], result["pretrain_seconds"] = pretrain(args, out)
    result.update(score(args, model))
    (out / "result.json").write_text(json.dumps(result, indent=1))
    r = result
    print(json.dumps({"recipe": args.recipe, "pin": r["pin"], "raw": r["raw"]["miou"],
                      "shuffled": r["shuffled"]["miou"],
                      "recognition": r.get("pretrain", {}).get("recognition_heldout")}), flush=True)


if __name__ == "__main__":
    main()
