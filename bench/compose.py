"""Compose throughput benchmark: `python bench/compose.py [--n 2000] [--image-size 224]`.

Uses data/objects + data/filtered when the pipeline has produced them, otherwise builds fixture
objects (coloured shapes on a 160 px canvas, like the openmoji render size) in a temp folder.
Composes N train images with 1 and with 2 workers through the real stage code (shards, JPEG
encoding, process-pool start-up all included), checks both runs give byte-identical shards, prints
a table naming the machine and writes bench/results/compose.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def digest(split_dir: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(split_dir.glob("part-*.parquet")):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="images per run")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--grid", type=int, default=8)
    ap.add_argument("--format", default="jpeg", choices=["jpeg", "png"])
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--objects", default=str(ROOT / "data/objects"), help="objects folder")
    ap.add_argument("--filtered", default=str(ROOT / "data/filtered/manifest.parquet"),
                    help="filtered manifest (fixture objects are built when it is missing)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/compose.json"))
    args = ap.parse_args(argv)

    from pin.params import ComposeParams
    from pin.synth.compose import run_compose
    from pin.params import FilterParams
    from pin.synth.filter import filter_objects, write_manifest, write_object_fixture

    with tempfile.TemporaryDirectory(prefix="pin-bench-") as tmp:
        tmp = Path(tmp)
        objects_dir, filtered = Path(args.objects), Path(args.filtered)
        if filtered.exists() and objects_dir.exists():
            source = f"{filtered} (objects: {objects_dir})"
        else:
            objects_dir, filtered = tmp / "objects", tmp / "filtered/manifest.parquet"
            cats = {f"shape_{i:02d}": "train" for i in range(20)}
            df = write_object_fixture(objects_dir, cats, per_category=24, canvas=160)
            out, _ = filter_objects(df, objects_dir, FilterParams(min_area=0.0, min_per_class=1),
                                    progress=False)
            write_manifest(out, filtered)
            source = "fixture (20 categories x 24 shapes, 160 px canvas)"

        rows, digests = [], {}
        for workers in [int(w) for w in args.workers.split(",")]:
            p = ComposeParams(image_size=args.image_size, grid=args.grid, n_train=args.n, n_val=0,
                              n_heldout=0, n_pretrain=0, shard_size=500, format=args.format, workers=workers)
            out_dir = tmp / f"composed-{workers}"
            start = time.perf_counter()
            run_compose(p, objects_dir, filtered, out_dir, None, progress=False)
            took = time.perf_counter() - start
            digests[workers] = digest(out_dir / "train")
            rows.append({"workers": workers, "images": args.n, "seconds": round(took, 2),
                         "images_per_s": round(args.n / took, 1)})

    from pin.machine import cpu_name

    machine = {"platform": platform.platform(), "python": platform.python_version(),
               "cpu": cpu_name(), "cpu_count": os.cpu_count(),
               "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    identical = len(set(digests.values())) == 1
    result = {"machine": machine, "objects": source, "image_size": args.image_size, "grid": args.grid,
              "format": args.format, "runs": rows, "identical_across_workers": identical,
              "note": "wall time of run_compose incl. process start-up, shard writing and encoding"}
    print(f"compose benchmark on {machine['cpu']} ({machine['cpu_count']} CPUs, {machine['platform']},"
          f" load {machine['load_avg_1min']}); objects: {source}")
    print(f"{args.n} images, {args.image_size}px, {args.format}")
    print(f"{'workers':>8} {'seconds':>9} {'images/s':>10}")
    for r in rows:
        print(f"{r['workers']:>8} {r['seconds']:>9.2f} {r['images_per_s']:>10.1f}")
    print(f"shards byte-identical across worker counts: {identical}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
