"""Build the mini VLM that ships in assets/mini_vlm (what `pretrain.source=asset` installs).

The same code as the pretrain_vlm stage (pin.vlm.pretrain.pretrain_mini), with a longer schedule
than a 2-core CPU affords in the offline budget; on one GPU it takes minutes.

    # 1. on the machine that ran `dvc repro` (it has data/composed): decode the pretraining
    #    images once (uint8, 64 px, lossless WebP) - 43 MB that travel to a GPU box instead of 140 MB of JPEGs
    python scripts/build_mini_vlm.py pack --out lab/pretrain_pack.pt
    # 2. anywhere with torch (GPU: --device cuda --workers 4); -S overrides params.yaml's pretrain keys
    python scripts/build_mini_vlm.py train --pack lab/pretrain_pack.pt --out assets/mini_vlm \\
        -S vision_steps=4000 -S lm_steps=8000 -S lm_batch_size=256 -S slot=anywhere --device cuda --workers 4
    # (without --pack it reads data/composed directly)

The params actually used, the device and the recognition report are stored in
assets/mini_vlm/mini_vlm.json ("meta.pretrain_metrics") and printed; the timings are only
printed (no model file holds a wall-clock value).
"""
from __future__ import annotations

import argparse
import io
import json
import pickle
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pin.composed import ComposedImage, read_split_records  # noqa: E402
from pin.params import parse_section  # noqa: E402
from pin.vlm.pretrain import pixels_uint8, pretrain_mini  # noqa: E402


def _webp(u8: torch.Tensor) -> list[bytes]:
    """Lossless WebP per image: the decoded pixels exactly, at ~45% of their raw size."""
    from PIL import Image

    out = []
    for im in u8.permute(0, 2, 3, 1).numpy():
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, "WEBP", lossless=True, quality=100, method=4)
        out.append(buf.getvalue())
    return out


def _unwebp(blobs: list[bytes]) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    arr = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def _strip(images: list[ComposedImage]) -> list[ComposedImage]:
    """The objects without the encoded image bytes (the pack holds decoded pixels instead)."""
    return [ComposedImage(im.image_id, b"", im.width, im.height, im.objects) for im in images]


def pack(args) -> None:
    p = parse_section("pretrain", _pretrain_raw(args.params))
    images = read_split_records(Path(args.composed) / "pretrain", limit=p.max_images)
    probe = read_split_records(Path(args.composed) / "heldout", limit=256)
    blob = {"image_size": p.image_size, "images": _strip(images), "probe": _strip(probe),
            "u8": _webp(pixels_uint8(p.image_size, images)), "probe_u8": _webp(pixels_uint8(p.image_size, probe))}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:  # plain pickle: torch.save's protocol 2 inflates bytes objects by ~60%
        pickle.dump(blob, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(out)
    print(f"packed {len(images)} + {len(probe)} probe images at {p.image_size} px -> {out} "
          f"({out.stat().st_size / 2**20:.1f} MiB)")


def _pretrain_raw(params_path: str) -> dict:
    return dict(yaml.safe_load(Path(params_path).read_text()).get("pretrain") or {})


def _override(raw: dict, sets: list[str]) -> dict:
    for item in sets:
        key, _, value = item.partition("=")
        if not _:
            raise SystemExit(f"-S expects key=value, got {item!r}")
        raw[key] = yaml.safe_load(value)
    return raw


def train(args) -> None:
    raw = _override(_pretrain_raw(args.params), args.set)
    raw.update(source="train", device=args.device)
    p = parse_section("pretrain", raw)
    grid = int(yaml.safe_load(Path(args.params).read_text())["compose"]["grid"])
    if args.pack:
        with open(args.pack, "rb") as f:  # a file this script wrote (pickle: trusted input only)
            blob = pickle.load(f)
        if blob["image_size"] != p.image_size:
            raise SystemExit(f"{args.pack}: packed at {blob['image_size']} px, pretrain.image_size={p.image_size}")
        images, probe, pixels = blob["images"], blob["probe"], (_unwebp(blob["u8"]), _unwebp(blob["probe_u8"]))
    else:
        images = read_split_records(Path(args.composed) / "pretrain", limit=p.max_images)
        probe = read_split_records(Path(args.composed) / "heldout", limit=256)
        pixels = None
    out = Path(args.out)
    t0 = time.perf_counter()
    summary = pretrain_mini(p, images, probe, str(out), str(out.parent / f"{out.name}.metrics.json"), grid=grid,
                            workers=args.workers, pixels=pixels)
    print(f"{summary}  ({time.perf_counter() - t0:.0f} s)")
    print(json.dumps(json.loads((out.parent / f"{out.name}.metrics.json").read_text()), indent=1))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="decode the pretraining images into one compressed file")
    a.add_argument("--out", required=True)
    b = sub.add_parser("train", help="pretrain a mini VLM and save it")
    b.add_argument("--pack", help="a file written by `pack` (else data/composed is read)")
    b.add_argument("--out", default="assets/mini_vlm")
    b.add_argument("-S", "--set", action="append", default=[], help="override a pretrain param: key=value")
    b.add_argument("--device", default="auto")
    b.add_argument("--workers", type=int, default=0, help="DataLoader workers making the text batches")
    for x in (a, b):
        x.add_argument("--params", default="params.yaml")
        x.add_argument("--composed", default="data/composed")
    args = ap.parse_args(argv)
    {"pack": pack, "train": train}[args.cmd](args)


if __name__ == "__main__":
    main()
