"""Can the CPUs keep the GPU fed under ``train.compose: fresh``? `python bench/fresh.py [--steps 20]`.

Measures, on this machine, through the real code (:class:`pin.fresh.FreshBatches`):

* compose throughput per core: training samples composed per second by one process (one core,
  one torch thread) - function C, JPEG encode and decode included - and by ``--workers`` DataLoader
  workers together;
* the train step's samples/s with the encoder in the loop (fresh) and with cached features, on
  the offline mini VLM (``assets/mini_vlm``), composition excluded;

and prints how many cores composing keep each train step busy, here and for the H100 reference
steps of ``bench/reference/train_step_h100.json`` (OpenFlamingo-3B and BLIP-2, ``baseline`` =
the encoder run in every step, what fresh composition needs). Objects: data/objects +
data/filtered when the pipeline made them, else a fixture (coloured shapes, 160 px, as
bench/compose.py). Writes bench/results/fresh.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def objects(tmp: Path, objects_dir: Path, filtered: Path) -> tuple[Path, Path, str]:
    if filtered.exists() and objects_dir.exists():
        return objects_dir, filtered, f"{filtered} (objects: {objects_dir})"
    from pin.params import FilterParams
    from pin.synth.filter import filter_objects, write_manifest, write_object_fixture

    objects_dir, filtered = tmp / "objects", tmp / "filtered" / "manifest.parquet"
    df = write_object_fixture(objects_dir, {f"shape_{i:02d}": "train" for i in range(20)}, per_category=24,
                              canvas=160)
    out, _ = filter_objects(df, objects_dir, FilterParams(min_area=0.0, min_per_class=1), progress=False)
    write_manifest(out, filtered)
    return objects_dir, filtered, "fixture (20 categories x 24 shapes, 160 px canvas)"


def compose_rate(batches, steps: int, workers: int) -> float:
    """Samples per second composed by ``workers`` DataLoader workers (0: this process)."""
    loader = iter(batches.loader(range(steps + max(workers, 1)), workers))
    for _ in range(max(workers, 1)):  # workers started and warm (object and background caches)
        next(loader)
    start = time.perf_counter()
    n = sum(len(next(loader)) for _ in range(steps))
    return n / (time.perf_counter() - start)


def train_rates(items: list, asset: str, batch: int, steps: int) -> dict[str, float]:
    """The mini VLM's PIN step (loss, backward, Adam) on pre-composed samples: samples/s with the
    encoder in the step (fresh) and on cached features."""
    from pin.methods import build_method
    from pin.params import BaselinesParams, InsertParams
    from pin.vlm.mini import load_mini

    vlm = load_mini(asset)
    torch.manual_seed(0)
    method = build_method("pin", vlm, InsertParams(), BaselinesParams())
    opt = torch.optim.Adam(method.trainable_parameters(), lr=1e-3)
    prompts = [vlm.prompt(q) for _, q, _ in items]
    answers = [a for _, _, a in items]
    pixels = vlm.preprocess([im for im, _, _ in items])
    cached = vlm.patch_features(pixels).float()
    out = {}
    for mode in ("fresh", "cached", "fresh", "cached"):  # the second round is the one kept (warm)
        start = time.perf_counter()
        for _ in range(steps):
            feats = method.features(vlm, vlm.preprocess([im for im, _, _ in items])).float() \
                if mode == "fresh" else cached
            loss = vlm.answer_loss(feats, prompts, answers, **method())
            opt.zero_grad()
            loss.backward()
            opt.step()
        out[mode] = steps * batch / (time.perf_counter() - start)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="batches timed per measurement")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for the pooled rate")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--backgrounds", default="builtin")
    ap.add_argument("--asset", default=str(ROOT / "assets" / "mini_vlm"))
    ap.add_argument("--objects", default=str(ROOT / "data" / "objects"))
    ap.add_argument("--filtered", default=str(ROOT / "data" / "filtered" / "manifest.parquet"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "fresh.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # one core per measurement: the rate per core

    from pin.fresh import FreshBatches
    from pin.machine import cpu_name
    from pin.params import ComposeParams

    with tempfile.TemporaryDirectory(prefix="pin-bench-") as tmp:
        objects_dir, filtered, source = objects(Path(tmp), Path(args.objects), Path(args.filtered))
        p = ComposeParams(image_size=args.image_size, backgrounds=args.backgrounds)
        batches = FreshBatches(p, objects_dir, filtered, seed=0, batch_size=args.batch)
        per_core = compose_rate(batches, args.steps, 0)
        pooled = compose_rate(batches, args.steps, args.workers)
        train = train_rates(batches[0], args.asset, args.batch, args.steps)

    reference = json.loads((ROOT / "bench" / "reference" / "train_step_h100.json").read_text())
    ref_rows = [{"arch": r["arch"], "config": r["config"], "samples_per_s": round(r["samples_per_s"], 1),
                 "cores_to_keep_up": round(r["samples_per_s"] / per_core, 1)}
                for r in reference["rows"] if "samples_per_s" in r]
    machine = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
               "load_avg_1min": round(os.getloadavg()[0], 2)}
    result = {"machine": machine, "objects": source, "image_size": args.image_size, "batch": args.batch,
              "compose_samples_per_s_per_core": round(per_core, 1),
              f"compose_samples_per_s_{args.workers}_workers": round(pooled, 1),
              "mini_train_samples_per_s": {k: round(v, 1) for k, v in train.items()},
              "mini_cores_to_keep_up": round(train["fresh"] / per_core, 2),
              "reference": {"machine": reference["machine"], "rows": ref_rows}}
    print(f"fresh composition on {machine['cpu']} ({machine['cpu_count']} CPUs, load {machine['load_avg_1min']});"
          f" objects: {source}; {args.image_size}px, backgrounds {args.backgrounds}")
    print(f"compose: {per_core:.1f} samples/s per core; {pooled:.1f} samples/s with {args.workers} workers")
    print(f"mini VLM train step (batch {args.batch}, 1 thread): {train['fresh']:.1f} samples/s with the encoder, "
          f"{train['cached']:.1f} on cached features -> {train['fresh'] / per_core:.2f} composing cores keep it busy")
    print(f"{reference['machine']} reference steps (bench/reference/train_step_h100.json; baseline: the encoder "
          "in every step, as fresh composition runs it; fast: cached features, the cached path):")
    for r in ref_rows:
        print(f"  {r['arch']:>15} {r['config']:>8} {r['samples_per_s']:>8.1f} samples/s -> "
              f"{r['cores_to_keep_up']:>6.1f} cores composing")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
