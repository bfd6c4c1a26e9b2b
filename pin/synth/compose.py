"""Compose stage: the paper's composition function C (Sec. 4.2, Sec. 5, Appendix D).

C(I_b, r, a_max, s_min, s_max, o_max) pastes objects on a background image I_b:

* number of objects ``a`` ~ uniform{1..a_max};
* size: the object's LONGER side, as a fraction of the image side, is drawn uniformly from
  ``[s_min[a-1], s_max[a-1]]`` (the bounds for the final object count ``a``) and snapped to a
  whole number of grid cells inside those bounds;
* aspect ratio ``r`` = the object's original one; the shorter side is the nearest whole number
  of cells (at least one), so the ratio is kept up to half a cell of quantisation;
* position: the top-left corner is a uniform grid line, the box lies inside the image;
* grid: G = ``compose.grid`` cells of ``image_size / G`` px; every box coordinate is a grid line,
  and the object is resized to exactly its snapped rectangle and alpha-blended in paste order;
* overlap (``o_max``), the measure used here ("occlusion"): for every already inserted object,
  the fraction of ITS box covered by the union of the boxes pasted after it (which lie on top of
  it) must stay <= o_max. The union makes the bound hold for the object's total occlusion, not
  just pairwise (two later boxes each covering 50% cannot hide an object completely). The newly
  pasted object lies on top and stays fully visible, so its own covered fraction is not bounded
  (a small object may sit inside a large one's box, like a cup on a table). o_max = 0 means no
  two boxes intersect (paper Tab. 6, row c). See ``occlusion``;
* a placement that breaks the overlap bound is redrawn (``MAX_TRIES`` per object, ``RESTARTS``
  full restarts); then ``a`` is reduced by one and the layout redrawn with the size bounds of the
  smaller count (a = 1 always fits).

Objects come from the kept rows of the filtered manifest: train and val draw from ``split ==
"train"`` categories, heldout from ``split == "heldout"`` ones (zero-shot). Without referrals the
categories of one image are distinct when possible, so the category name identifies the object.
With ``compose.referrals`` (Appendix D), each further object reuses a category already in the
image with probability ``same_type_prob``; an object whose category occurs several times gets a
positional word from the axis with the largest centre difference ("left dog", see ``referrals``).

Each image's randomness comes from its own seed, derived from (compose.seed, split, index), so
the output does not depend on worker count or order, and shards are byte-identical across runs.
"""
from __future__ import annotations

import hashlib
import io
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from pin.errors import PinError
from pin.params import ComposeParams
from pin.synth.backgrounds import BackgroundBank, BackgroundSource, scan_backgrounds

SPLITS = ("train", "val", "heldout", "pretrain")
SPLIT_CODES = {"train": 0, "val": 1, "heldout": 2, "pretrain": 3}
# pretrain: the offline mini VLM's own "web corpus" - every category, held-out ones included, as
# OpenFlamingo's pretraining data holds dogs and cups; PIN itself never trains on held-out names.
OBJECT_SPLIT = {"train": "train", "val": "train", "heldout": "heldout", "pretrain": "all"}
MAX_TRIES = 50  # placement draws per object before a full restart
RESTARTS = 3  # full layout restarts before a is reduced
MAX_OBJECT_FAILURES = 50  # unreadable object draws per image before giving up
CHUNK = 32  # images per worker task
CACHE_BYTES = 256 << 20  # decoded-object LRU cache per worker
EPS = 1e-9

Box = tuple[int, int, int, int]  # grid cells (i1, j1, i2, j2), i along x, ends exclusive


# ---------------------------------------------------------------------------------------------
# The composition function C: layout on the grid
# ---------------------------------------------------------------------------------------------

def long_side_range(p: ComposeParams, a: int) -> tuple[int, int]:
    """Allowed longer-side lengths, in grid cells, for an image with ``a`` objects."""
    lo = math.ceil(p.s_min[a - 1] * p.grid - EPS)
    hi = math.floor(p.s_max[a - 1] * p.grid + EPS)
    return max(1, lo), min(p.grid, hi)


def check_config(p: ComposeParams) -> None:
    """Every object count must allow at least one grid-snapped size inside its bounds."""
    for a in range(1, p.a_max + 1):
        lo, hi = long_side_range(p, a)
        if lo > hi:
            raise PinError(
                f"compose.s_min[{a - 1}]={p.s_min[a - 1]} .. compose.s_max[{a - 1}]={p.s_max[a - 1]}"
                f" contains no multiple of 1/grid (compose.grid={p.grid}): widen the range or"
                f" use a finer grid"
            )


def snap_size(aspect: float, long_cells: int) -> tuple[int, int]:
    """(width, height) in cells for an object of aspect ratio w/h with the given longer side."""
    if aspect >= 1:
        return long_cells, max(1, math.floor(long_cells / aspect + 0.5))
    return max(1, math.floor(long_cells * aspect + 0.5)), long_cells


def covered_fraction(box: Box, others: Sequence[Box]) -> float:
    """Fraction of ``box`` covered by the union of ``others`` (exact on the grid)."""
    i1, j1, i2, j2 = box
    mask = np.zeros((j2 - j1, i2 - i1), dtype=bool)
    for o1, p1, o2, p2 in others:
        a, b, c, d = max(i1, o1), max(j1, p1), min(i2, o2), min(j2, p2)
        if a < c and b < d:
            mask[b - j1:d - j1, a - i1:c - i1] = True
    return float(mask.mean())


def occlusion(boxes: Sequence[Box]) -> list[float]:
    """The overlap measure bounded by o_max: for each box (in paste order), the fraction of it
    covered by the union of the boxes pasted after it."""
    return [covered_fraction(b, boxes[k + 1:]) for k, b in enumerate(boxes)]


def _fits(boxes: list[Box], new: Box, o_max: float) -> bool:
    later = [*boxes, new]
    return all(covered_fraction(b, later[k + 1:]) <= o_max + EPS for k, b in enumerate(boxes))


def sample_count(rng: np.random.Generator, p: ComposeParams) -> int:
    return int(rng.integers(1, p.a_max + 1))


def layout(rng: np.random.Generator, aspects: Sequence[float], p: ComposeParams) -> list[Box]:
    """Place objects with the given aspect ratios (w/h), in order, on the grid.

    Returns boxes for the first ``len(result)`` objects (a is reduced when they do not fit).
    """
    G = p.grid
    for a in range(min(len(aspects), p.a_max), 0, -1):
        lo, hi = long_side_range(p, a)
        s_lo, s_hi = p.s_min[a - 1], p.s_max[a - 1]
        for _ in range(RESTARTS):
            boxes: list[Box] = []
            for k in range(a):
                for _ in range(MAX_TRIES):
                    s = rng.uniform(s_lo, s_hi)
                    long_cells = min(hi, max(lo, math.floor(s * G + 0.5)))
                    w, h = snap_size(aspects[k], long_cells)
                    i1 = int(rng.integers(0, G - w + 1))
                    j1 = int(rng.integers(0, G - h + 1))
                    box = (i1, j1, i1 + w, j1 + h)
                    if _fits(boxes, box, p.o_max):
                        boxes.append(box)
                        break
                else:
                    break  # this object did not fit: restart the layout
            if len(boxes) == a:
                return boxes
    return []


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

def to_pixels(box: Box, p: ComposeParams) -> tuple[int, int, int, int]:
    c = p.image_size // p.grid
    return box[0] * c, box[1] * c, box[2] * c, box[3] * c


def paste(canvas: Image.Image, obj: Image.Image, px_box: tuple[int, int, int, int]) -> None:
    """Resize an RGBA object to exactly ``px_box`` and alpha-blend it into the RGB ``canvas`` in
    place, on that rectangle only: out = (fg * a + bg * (255 - a)) / 255, rounded (PIL's C blend;
    identical to the uint16 numpy formula, 4x faster)."""
    x1, y1, x2, y2 = px_box
    fg = obj.resize((x2 - x1, y2 - y1), Image.BILINEAR, reducing_gap=3.0)
    canvas.paste(fg, (x1, y1), fg)


def render(background: np.ndarray, objects: Sequence[Image.Image], boxes: Sequence[Box],
           p: ComposeParams) -> Image.Image:
    """Paste the objects, in order, on a copy of the background (H x W x 3 uint8)."""
    canvas = Image.fromarray(np.ascontiguousarray(background, dtype=np.uint8), "RGB")
    for obj, box in zip(objects, boxes):
        paste(canvas, obj, to_pixels(box, p))
    return canvas


def encode(canvas: Image.Image, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpeg":
        canvas.save(buf, "JPEG", quality=quality)
    else:
        canvas.save(buf, "PNG", compress_level=3)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Referral expressions (Appendix D)
# ---------------------------------------------------------------------------------------------

def readable(category: str) -> str:
    return category.replace("_", " ").strip()


def referrals(categories: Sequence[str], boxes: Sequence[Sequence[int]]) -> list[str]:
    """Referral text per object: the readable name, prefixed by left/right/top/bottom when the
    category occurs several times. For object k among its same-category peers, the margin of a
    direction is how far k's centre lies beyond ALL peers' centres on that axis (e.g. "left":
    min over peers of peer_cx - k_cx); the direction with the largest positive margin wins. With
    two instances this is exactly the axis with the largest centre difference. An object that is
    extreme in no direction (the middle of three on both axes, or equal centres) keeps the bare
    name: no positional word would single it out."""
    cx = [(b[0] + b[2]) / 2 for b in boxes]
    cy = [(b[1] + b[3]) / 2 for b in boxes]
    out = []
    for k, cat in enumerate(categories):
        name = readable(cat)
        peers = [m for m, c in enumerate(categories) if c == cat and m != k]
        if not peers:
            out.append(name)
            continue
        margins = {
            "left": min(cx[m] - cx[k] for m in peers),
            "right": min(cx[k] - cx[m] for m in peers),
            "top": min(cy[m] - cy[k] for m in peers),
            "bottom": min(cy[k] - cy[m] for m in peers),
        }
        word, margin = max(margins.items(), key=lambda kv: kv[1])  # ties: first in that order
        out.append(f"{word} {name}" if margin > 0 else name)
    return out


# ---------------------------------------------------------------------------------------------
# Object pools and one image
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ObjectPool:
    """Kept objects of one split: categories (sorted) and per category the PNG paths."""

    categories: tuple[str, ...]
    paths: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        return sum(len(p) for p in self.paths)


def read_object(path: Path, max_side: int) -> tuple[Image.Image, float]:
    """Decode an object PNG (RGBA), shrink it to at most ``max_side`` (never pasted larger);
    returns (image, original aspect w/h)."""
    with Image.open(path) as im:
        im.load()
        rgba = im.convert("RGBA")
    w, h = rgba.size
    if w < 1 or h < 1 or rgba.getchannel("A").getbbox() is None:
        raise ValueError("empty object")
    if max(w, h) > max_side:
        scale = max_side / max(w, h)
        rgba = rgba.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR,
                           reducing_gap=3.0)
    return rgba, w / h


class Composer:
    """Composes images of the splits from object pools and a background source."""

    def __init__(self, p: ComposeParams, objects_dir: str | Path, pools: dict[str, ObjectPool],
                 backgrounds: BackgroundSource):
        check_config(p)
        self.p = p
        self.objects_dir = Path(objects_dir)
        self.pools = pools
        self.bank = BackgroundBank(backgrounds, p.image_size)
        self._cache: OrderedDict[str, tuple[Image.Image, float]] = OrderedDict()
        self._cache_bytes = 0
        self._bad: set[str] = set()

    def _load(self, rel: str) -> tuple[Image.Image, float]:
        hit = self._cache.get(rel)
        if hit is not None:
            self._cache.move_to_end(rel)
            return hit
        if rel in self._bad:
            raise OSError("known unreadable")
        try:
            item = read_object(self.objects_dir / rel, self.p.image_size)
        except Exception:
            self._bad.add(rel)
            raise
        size = item[0].width * item[0].height * 4
        self._cache[rel] = item
        self._cache_bytes += size
        while self._cache_bytes > CACHE_BYTES and len(self._cache) > 1:
            _, (old, _) = self._cache.popitem(last=False)
            self._cache_bytes -= old.width * old.height * 4
        return item

    def _draw_objects(self, rng: np.random.Generator, pool: ObjectPool, a: int, stats: dict):
        """Draw a categories + instances, decoding each (unreadable files are redrawn, counted)."""
        n_cat = len(pool.categories)
        chosen: list[tuple[int, str, Image.Image, float]] = []  # (cat index, path, image, aspect)
        failures = 0
        while len(chosen) < a:
            used_cats = [c for c, *_ in chosen]
            if self.p.referrals and chosen and rng.random() < self.p.same_type_prob:
                ci = used_cats[int(rng.integers(len(used_cats)))]
            elif not self.p.referrals and len(set(used_cats)) < n_cat:
                free = [c for c in range(n_cat) if c not in used_cats]
                ci = free[int(rng.integers(len(free)))]
            else:
                ci = int(rng.integers(n_cat))
            paths = pool.paths[ci]
            used = {path for c, path, *_ in chosen if c == ci}
            choices = [q for q in paths if q not in used] or list(paths)
            rel = choices[int(rng.integers(len(choices)))]
            try:
                img, aspect = self._load(rel)
            except Exception:  # noqa: BLE001 - unreadable object: counted, redrawn
                failures += 1
                stats["unreadable_objects"].add(rel)
                if failures >= MAX_OBJECT_FAILURES:
                    raise PinError(f"{failures} unreadable object PNGs drawn for one image under "
                                   f"{self.objects_dir} (e.g. {rel}); rerun generate and filter") from None
                continue
            chosen.append((ci, rel, img, aspect))
        stats["object_read_failures"] += failures
        return chosen

    def compose(self, split: str, index: int) -> tuple[dict, dict]:
        """One image: returns (shard record, stats)."""
        p = self.p
        seed = image_seed(p.seed, split, index)
        rng = np.random.default_rng(seed)
        stats = {"object_read_failures": 0, "unreadable_objects": set(),
                 "background_read_failures": 0, "a_reduced": 0}
        background, bg_id, bg_failures = self.bank.sample(rng)
        stats["background_read_failures"] += bg_failures
        a = sample_count(rng, p)
        pool = self.pools[split]
        chosen = self._draw_objects(rng, pool, a, stats)
        boxes = layout(rng, [c[3] for c in chosen], p)
        if len(boxes) < a:
            stats["a_reduced"] += 1
            chosen = chosen[:len(boxes)]
        canvas = render(background, [c[2] for c in chosen], boxes, p)
        cats = [pool.categories[c[0]] for c in chosen]
        px = [to_pixels(b, p) for b in boxes]
        refs = referrals(cats, px) if p.referrals else [readable(c) for c in cats]
        objects = [
            {"category": cat, "box": list(pb), "grid_box": list(gb), "referral": ref, "source": c[1]}
            for cat, pb, gb, ref, c in zip(cats, px, boxes, refs, chosen)
        ]
        record = {
            "image_id": index + 1,
            "image": encode(canvas, p.format, p.quality),
            "format": p.format,
            "width": p.image_size,
            "height": p.image_size,
            "background": bg_id,
            "seed": seed,
            "objects": objects,
        }
        return record, stats


def image_seed(seed: int, split: str, index: int) -> int:
    """Per-image seed from (compose.seed, split, image index): independent of worker order."""
    ss = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, SPLIT_CODES[split], index])
    hi, lo = (int(x) for x in ss.generate_state(2, np.uint32))
    return ((hi << 32) | lo) & 0x7FFFFFFFFFFFFFFF


# ---------------------------------------------------------------------------------------------
# Stage: manifest -> pools -> shards (+ COCO export of heldout, metrics)
# ---------------------------------------------------------------------------------------------

def load_pools(filtered: str | Path) -> tuple[dict[str, ObjectPool], str]:
    """Object pools per output split from the filtered manifest, and a fingerprint of its kept rows."""
    import pandas as pd

    filtered = Path(filtered)
    if not filtered.exists():
        raise PinError(f"{filtered} not found: run the filter stage first (dvc repro filter)")
    try:
        df = pd.read_parquet(filtered)
    except Exception as err:  # noqa: BLE001
        raise PinError(f"{filtered}: not a readable Parquet file ({err})") from None
    missing = [c for c in ("category", "split", "path", "kept") if c not in df.columns]
    if missing:
        raise PinError(f"{filtered}: missing columns {missing}")
    df = df[df["kept"].astype(bool)]
    if len(df) == 0:
        raise PinError(f"{filtered}: no kept objects (the filtered manifest is empty): nothing to compose")
    df = df.assign(category=df["category"].astype(str), split=df["split"].astype(str),
                   path=df["path"].astype(str))
    sort_cols = ["split", "category"] + (["index"] if "index" in df.columns else []) + ["path"]
    df = df.sort_values(sort_cols, kind="stable")
    fp_cols = [c for c in ("split", "category", "index", "path", "seed", "prompt", "width", "height",
                           "backend") if c in df.columns]
    blob = df[fp_cols].to_csv(index=False).encode()
    fingerprint = hashlib.sha256(blob).hexdigest()[:16]
    by_split = {}
    for obj_split in ("train", "heldout"):
        part = df[df["split"] == obj_split]
        cats = tuple(sorted(part["category"].unique().tolist()))
        groups = part.groupby("category", sort=True)["path"].apply(tuple)
        by_split[obj_split] = ObjectPool(cats, tuple(groups[c] for c in cats))
    cats = by_split["train"].categories + by_split["heldout"].categories
    order = sorted(range(len(cats)), key=lambda i: cats[i])
    both = by_split["train"].paths + by_split["heldout"].paths
    by_split["all"] = ObjectPool(tuple(cats[i] for i in order), tuple(both[i] for i in order))
    return {s: by_split[OBJECT_SPLIT[s]] for s in SPLITS}, fingerprint


def _code_fingerprint() -> str:
    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in ("compose.py", "backgrounds.py", "shards.py", "coco_export.py"):
        h.update((here / name).read_bytes())
    import PIL

    h.update(f"numpy {np.__version__} pillow {PIL.__version__}".encode())
    return h.hexdigest()[:16]


def split_sizes(p: ComposeParams) -> dict[str, int]:
    return {"train": p.n_train, "val": p.n_val, "heldout": p.n_heldout, "pretrain": p.n_pretrain}


_WORKER: Composer | None = None


def _init_worker(p_dict: dict, objects_dir: str, pools: dict, backgrounds: BackgroundSource) -> None:
    global _WORKER
    _WORKER = Composer(ComposeParams(**p_dict), objects_dir, pools, backgrounds)


def _reset_worker() -> None:
    global _WORKER
    _WORKER = None  # free the in-process caches (objects, photo levels)


def _compose_chunk(task: tuple[str, int, int]) -> tuple[str, int, list[dict], dict]:
    split, start, stop = task
    assert _WORKER is not None
    records, stats = [], _empty_stats()
    for index in range(start, stop):
        rec, st = _WORKER.compose(split, index)
        records.append(rec)
        _merge_stats(stats, st)
    return split, start, records, stats


def _empty_stats() -> dict:
    return {"object_read_failures": 0, "unreadable_objects": set(), "background_read_failures": 0,
            "a_reduced": 0}


def _merge_stats(into: dict, st: dict) -> None:
    for k, v in st.items():
        if isinstance(v, set):
            into[k] |= v
        else:
            into[k] += v


def _shard_meta(stats: dict) -> dict:
    return {**stats, "unreadable_objects": sorted(stats["unreadable_objects"])}


def run_compose(
    p: ComposeParams,
    objects_dir: str | Path = "data/objects",
    filtered: str | Path = "data/filtered/manifest.parquet",
    out_dir: str | Path = "data/composed",
    metrics_path: str | Path | None = "metrics/compose.json",
    *,
    progress: bool = True,
) -> dict:
    """The compose stage. Resumable: shards already written with the same config are kept.

    Returns the metrics plus ``run`` (shards written / reused this time)."""
    from multiprocessing import get_context

    from tqdm import tqdm

    from pin.io import atomic_write_json, prepare_resumable_dir
    from pin.synth import shards as sh
    from pin.synth.coco_export import export_coco

    check_config(p)
    pools, objects_fp = load_pools(filtered)
    sizes = split_sizes(p)
    for split, n in sizes.items():
        if n and not pools[split].categories:
            raise PinError(f"compose.n_{split}={n} but the filtered manifest has no kept "
                           f"{OBJECT_SPLIT[split]} objects")
    backgrounds = scan_backgrounds(p.backgrounds)
    out_dir = Path(out_dir)
    config = {
        "params": p.model_dump(exclude={"workers"}),
        "objects": objects_fp,
        "backgrounds": backgrounds.fingerprint(),
        "code": _code_fingerprint(),
    }
    prepare_resumable_dir(out_dir, config)
    sh.clean_temp_files(out_dir)

    tasks, todo_shards, reused = [], {}, 0
    for split in SPLITS:
        (out_dir / split).mkdir(parents=True, exist_ok=True)
        for k, (start, stop) in enumerate(sh.shard_ranges(sizes[split], p.shard_size)):
            path = out_dir / split / sh.shard_name(k)
            if path.exists():
                reused += 1
                continue
            todo_shards[(split, start)] = (path, stop)
            tasks += [(split, s, min(stop, s + CHUNK)) for s in range(start, stop, CHUNK)]

    n_todo = sum(t[2] - t[1] for t in tasks)
    init_args = (p.model_dump(), str(objects_dir), pools, backgrounds)
    written = 0
    with tqdm(total=n_todo, desc="compose", unit="img", disable=not progress) as bar:
        if p.workers > 1 and len(tasks) > 1:
            ctx = get_context("spawn")
            pool = ctx.Pool(min(p.workers, len(tasks)), initializer=_init_worker, initargs=init_args)
            results = pool.imap(_compose_chunk, tasks)
        else:
            pool = None
            _init_worker(*init_args)
            results = map(_compose_chunk, tasks)
        try:
            current: tuple[str, int] | None = None
            buf: list[dict] = []
            stats = _empty_stats()
            for split, start, records, st in results:  # ordered; chunks never cross shards
                if (split, start) in todo_shards:  # the first chunk of a shard
                    current, buf, stats = (split, start), [], _empty_stats()
                assert current is not None
                buf += records
                _merge_stats(stats, st)
                bar.update(len(records))
                path, stop = todo_shards[current]
                if current[1] + len(buf) == stop:
                    sh.write_shard(path, buf, _shard_meta(stats))
                    written += 1
        except BaseException:
            if pool is not None:
                pool.terminate()  # do not wait for the queued chunks after an error / Ctrl-C
            raise
        finally:
            if pool is not None:
                pool.close()
                pool.join()
            _reset_worker()

    export_coco(out_dir / "heldout", pools["heldout"].categories)
    metrics = collect_metrics(out_dir, p, pools, backgrounds)
    if metrics_path is not None:
        atomic_write_json(metrics_path, metrics)
    return {**metrics, "run": {"shards_written": written, "shards_reused": reused}}


def collect_metrics(out_dir: str | Path, p: ComposeParams, pools: dict[str, ObjectPool],
                    backgrounds: BackgroundSource) -> dict:
    """Metrics read back from the shards (so a resumed run reports the same numbers)."""
    from pin.synth import shards as sh

    out_dir = Path(out_dir)
    splits, unreadable = {}, set()
    for split in SPLITS:
        table = sh.read_split(out_dir / split, columns=["background", "objects"])
        objs = table.column("objects").to_pylist()
        bgs = table.column("background").to_pylist()
        counts = [len(o) for o in objs]
        hist = {str(a): counts.count(a) for a in range(1, p.a_max + 1)}
        cats = {ob["category"] for o in objs for ob in o}
        bg_kinds: dict[str, int] = {}
        for b in bgs:
            kind = b.split(":", 1)[0]
            bg_kinds[kind] = bg_kinds.get(kind, 0) + 1
        meta = _empty_stats()
        for shard in sh.list_shards(out_dir / split):
            m = sh.read_meta(shard)
            for k in ("object_read_failures", "background_read_failures", "a_reduced"):
                meta[k] += int(m.get(k, 0))
            unreadable |= set(m.get("unreadable_objects", []))
        splits[split] = {
            "images": len(objs),
            "objects": int(sum(counts)),
            "objects_per_image": hist,
            "categories_used": len(cats),
            "categories_available": len(pools[split].categories),
            "objects_available": len(pools[split]),
            "shards": len(sh.list_shards(out_dir / split)),
            "backgrounds": dict(sorted(bg_kinds.items())),
            "a_reduced": meta["a_reduced"],
            "object_read_failures": meta["object_read_failures"],
            "background_read_failures": meta["background_read_failures"],
            "positional_referrals": sum(
                1 for o in objs for ob in o if ob["referral"] != readable(ob["category"])),
        }
    return {
        "splits": splits,
        "images": sum(s["images"] for s in splits.values()),
        "unreadable_objects": sorted(unreadable)[:50],
        "backgrounds": backgrounds.describe(),
        "image_size": p.image_size,
        "grid": p.grid,
        "format": p.format,
    }


def summary(result: dict) -> str:
    s = result["splits"]
    run = result.get("run", {})
    return (", ".join(f"{k} {v['images']} images/{v['objects']} objects" for k, v in s.items())
            + f"; shards written {run.get('shards_written', 0)}, reused {run.get('shards_reused', 0)}")


__all__ = [
    "Box", "ObjectPool", "Composer", "layout", "sample_count", "snap_size", "long_side_range",
    "check_config", "covered_fraction", "occlusion", "render", "paste", "to_pixels", "encode",
    "referrals", "readable", "image_seed", "load_pools", "run_compose", "collect_metrics",
    "summary",
]
