"""Build the mini VLM that ships in assets/mini_vlm (what `pretrain.source=asset` installs).

The same code as the pretrain_vlm stage (pin.vlm.pretrain.pretrain_mini), with a longer language
pretraining than the offline budget affords: the stage's schedule (params.yaml's pretrain keys),
then ``--then STEPS:SEED`` continuations (pin.vlm.pretrain_continue: new batches, a warm-restarted
one-cycle schedule each). The shipped shapes asset is exactly this (docs/mini_vlm.md, round 4):

    dvc repro compose                      # data/composed: the default's shapes, pretraining split jittered
    python scripts/build_mini_vlm.py train --out assets/mini_vlm --threads 1 \
        --then 6000:1 --then 6600:2 --then 3000:3 --then 3000:4
    # 3,000 + 6,000 + 6,600 + 3,000 + 3,000 steps x 64 texts = 1.38M texts; ~135 min at one thread of a 2-core EPYC

``--from DIR`` continues a saved mini VLM instead of starting over: the 998k-text asset of
before (3,000 + 6,000 + 6,600) became today's with ``--from assets/mini_vlm --then 3000:3
--then 3000:4`` (~30 min at one thread), and that writes the same bytes as the one-go build's
last two segments (the history in mini_vlm.json included).

On a GPU box, pack the decoded pretraining images first (43 MB instead of the JPEGs), then train there:

    python scripts/build_mini_vlm.py pack --out lab/pretrain_pack.pt
    python scripts/build_mini_vlm.py train --pack lab/pretrain_pack.pt --out assets/mini_vlm \\
        --device cuda --workers 4 --then 6000:1 --then 6600:2 --then 3000:3 --then 3000:4  # -S key=value overrides a pretrain param

The params actually used, the device, every language segment and the recognition report are
stored in assets/mini_vlm/mini_vlm.json ("meta.pretrain_metrics") and printed; the timings are
only printed (no model file holds a wall-clock value).
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
from pin.stage import apply_threads  # noqa: E402
from pin.vlm.pretrain import pixels_uint8, pretrain_mini  # noqa: E402
from pin.vlm.pretrain_continue import continue_language  # noqa: E402


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
    apply_threads(args.threads or int(yaml.safe_load(Path(args.params).read_text()).get("threads", 2)))
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
    if args.start:
        if not args.then:
            raise SystemExit("--from continues a saved mini VLM: give at least one --then STEPS:SEED")
        if not (Path(args.start) / "mini_vlm.json").is_file():
            raise SystemExit(f"--from: no mini VLM at {args.start} (expected {args.start}/mini_vlm.json)")
    else:
        t0 = time.perf_counter()
        summary = pretrain_mini(p, images, probe, str(out), str(out.parent / f"{out.name}.metrics.json"), grid=grid,
                                workers=args.workers, pixels=pixels)
        print(f"{summary}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    source = Path(args.start or out)
    for steps, seed in args.then:
        t0 = time.perf_counter()
        result = continue_language(source, out, images, probe, steps=steps, seed=seed, lr=p.lm_lr,
                                   batch_size=p.lm_batch_size or p.batch_size, grid=grid, pixels=pixels,
                                   label=_last_segment(source))
        source = out
        print(f"continued by {steps} steps (seed {seed}) -> {out}: loss {result['language']['final_loss']}, "
              f"recognition {result['recognition_after']}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(json.dumps(json.loads((out / "mini_vlm.json").read_text())["meta"]["pretrain_metrics"], indent=1))


def _last_segment(model: Path) -> str:
    """How a new segment names its start: the model's last segment, so a build continued with
    --from records the same history as one built in one go."""
    language = json.loads((model / "mini_vlm.json").read_text())["meta"]["pretrain_metrics"]["language"]
    return f"segment {len(language.get('segments', [None])) - 1}"


def _phase(text: str) -> tuple[int, int]:
    steps, sep, seed = text.partition(":")
    try:
        if not sep or int(steps) < 1:
            raise ValueError
        return int(steps), int(seed)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected STEPS:SEED with STEPS >= 1, e.g. 6000:1 (got {text!r})") from None


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
    b.add_argument("--from", dest="start", metavar="DIR",
                   help="continue this saved mini VLM (e.g. assets/mini_vlm) instead of pretraining one: only --then runs")
    b.add_argument("--then", type=_phase, action="append", default=[], metavar="STEPS:SEED",
                   help="continue the language pretraining by STEPS batches with a new SEED (repeatable)")
    b.add_argument("--threads", type=int, default=None, help="CPU threads (default: params.yaml's threads)")
    for x in (a, b):
        x.add_argument("--params", default="params.yaml")
        x.add_argument("--composed", default="data/composed")
    args = ap.parse_args(argv)
    {"pack": pack, "train": train}[args.cmd](args)


if __name__ == "__main__":
    main()
