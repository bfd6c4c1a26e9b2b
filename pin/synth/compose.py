"""The compose stage: the filtered objects, pasted by the composition function C
(:mod:`pin.synth.layout`) on backgrounds (:mod:`pin.synth.backgrounds`), into Parquet shards
(:mod:`pin.synth.shards`) per split, the heldout split also exported as COCO
(:mod:`pin.synth.coco_export`), and ``metrics/compose.json``.

Objects come from the kept rows of the filtered manifest: train and val draw from ``split ==
"train"`` categories, heldout from ``split == "heldout"`` ones (zero-shot), pretrain from both.
Without referrals the categories of one image are distinct when possible, so the category name
identifies the object. With ``compose.referrals`` (Appendix D), each further object reuses a
category already in the image with probability ``same_type_prob`` (then gets a positional word).

Each image's randomness comes from its own seed, derived from (compose.seed, split, index), so
the output does not depend on worker count or order, and shards are byte-identical across runs.
Resumable: shards already written with the same config are kept.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image

from pin.categories import query_name
from pin.errors import PinError
from pin.params import ComposeParams
from pin.synth.appearance import apply_appearance, appearance_levels
from pin.synth.backgrounds import BackgroundBank, BackgroundSource, scan_backgrounds
from pin.synth.layout import encode, layout, referrals, render, sample_count, to_pixels, visible_extent
from pin.synth.objects import ObjectPool, load_object, load_object_pools
from pin.synth.shards import SPLITS

SPLIT_CODES = {"train": 0, "val": 1, "heldout": 2, "pretrain": 3}
# pretrain: the offline mini VLM's own "web corpus" - every category, held-out ones included, as
# OpenFlamingo's pretraining data holds dogs and cups; PIN itself never trains on held-out names.
OBJECT_SPLIT = {"train": "train", "val": "train", "heldout": "heldout", "pretrain": "all"}
MAX_OBJECT_FAILURES = 50  # unreadable object draws per image before giving up
CHUNK = 32  # images per worker task
CACHE_BYTES = 256 << 20  # decoded-object LRU cache per worker
# The modules whose code decides the shards' bytes (with categories.py): part of the resume fingerprint.
CODE_FILES = ("compose.py", "appearance.py", "layout.py", "objects.py", "backgrounds.py", "shards.py", "coco_export.py")


def load_pools(filtered: str | Path) -> tuple[dict[str, ObjectPool], str]:
    """Object pools per output split from the filtered manifest, and a fingerprint of its kept rows."""
    by_split, fingerprint = load_object_pools(filtered)
    return {s: by_split[OBJECT_SPLIT[s]] for s in SPLITS}, fingerprint


class Composer:
    """Composes images of the splits from object pools and a background source."""

    def __init__(self, p: ComposeParams, objects_dir: str | Path, pools: dict[str, ObjectPool],
                 backgrounds: BackgroundSource):
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
            item = load_object(self.objects_dir / rel, self.p.image_size)
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
        levels = appearance_levels(seed, boxes, p, split)
        pictures = [apply_appearance(c[2], *lv, grid=p.grid) if lv else c[2] for c, lv in zip(chosen, levels)]
        canvas = render(background, pictures, boxes, p)
        if p.box == "visible":  # labels: what later pastes leave of each object (pasting is unchanged)
            boxes = visible_extent(boxes)
        cats = [pool.categories[c[0]] for c in chosen]
        px = [to_pixels(b, p) for b in boxes]
        clean = p.query_names == "clean"
        refs = (referrals(cats, px, clean, p.referral_style, rng) if p.referrals
                else [query_name(c, clean) for c in cats])
        objects = [
            {"category": cat, "box": list(pb), "grid_box": list(gb), "referral": ref, "source": c[1],
             "appearance": list(lv)}
            for cat, pb, gb, ref, c, lv in zip(cats, px, boxes, refs, chosen, levels)
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


def _code_fingerprint() -> str:
    here = Path(__file__).parent
    h = hashlib.sha256()
    for path in (*(here / n for n in CODE_FILES), here.parent / "categories.py"):  # names: query_name
        h.update(path.read_bytes())
    import PIL

    h.update(f"numpy {np.__version__} pillow {PIL.__version__}".encode())
    return h.hexdigest()[:16]


def split_sizes(p: ComposeParams) -> dict[str, int]:
    return {"train": p.n_train, "val": p.n_val, "heldout": p.n_heldout, "pretrain": p.n_pretrain}


_WORKER: Composer | None = None


def worker_args(p: ComposeParams, objects_dir: str | Path, pools: dict[str, ObjectPool],
                backgrounds: BackgroundSource) -> tuple:
    """What each worker process is started with (pickled): the params object itself, since
    ``model_dump()`` drops the fields marked ``exclude=True`` (max_corrupt) and a worker rebuilt
    from it would run with their defaults."""
    return p, str(objects_dir), pools, backgrounds


def _init_worker(p: ComposeParams, objects_dir: str, pools: dict, backgrounds: BackgroundSource) -> None:
    global _WORKER
    _WORKER = Composer(p, objects_dir, pools, backgrounds)


_START_ERROR: str | None = None  # why this worker process could not start (sent back with its first task)


def _start_worker(blob: bytes) -> None:
    """A pool worker's initializer. The arguments travel pickled and are unpickled here, so that
    any failure to start (an object it cannot unpickle, an import that fails, a file it cannot
    read) is kept and raised, with its message, by the worker's first task: an initializer that
    raises would make the pool respawn workers forever or die without saying why."""
    global _START_ERROR
    try:
        import pickle

        _init_worker(*pickle.loads(blob))
    except Exception as err:  # noqa: BLE001 - reported by _compose_chunk
        from pin.stage import error_line

        _START_ERROR = error_line(err)


def _reset_worker() -> None:
    global _WORKER
    _WORKER = None  # free the in-process caches (objects, photo levels)


def _compose_chunk(task: tuple[str, int, int]) -> tuple[str, int, list[dict], dict]:
    split, start, stop = task
    if _START_ERROR is not None:
        raise PinError(f"a compose worker process could not start: {_START_ERROR}")
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


def check_backgrounds(source: BackgroundSource, p: ComposeParams) -> None:
    """A background folder: unreadable images are skipped and counted; more than
    ``compose.max_corrupt`` of them stops the stage before any work."""
    bad, total = len(source.unreadable), len(source.unreadable) + len(source.files)
    if bad > p.max_corrupt * total:
        raise PinError(f"compose.backgrounds={p.backgrounds!r}: {bad}/{total} images are unreadable "
                       f"(> compose.max_corrupt={p.max_corrupt:g}), e.g. {list(source.unreadable[:3])}")
    if bad:
        print(f"[compose] warning: skipping {bad}/{total} unreadable background images, "
              f"e.g. {source.unreadable[0]}")


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
    from pin.io import atomic_write_json, prepare_resumable_dir, remove_temp_files
    from pin.synth.coco_export import export_coco
    from pin.synth.compose_metrics import collect_metrics

    backgrounds = scan_backgrounds(p.backgrounds, size=p.image_size)  # once: the workers get the file list
    check_backgrounds(backgrounds, p)
    pools, objects_fp = load_pools(filtered)
    sizes = split_sizes(p)
    for split, n in sizes.items():
        if n and not pools[split].categories:
            raise PinError(f"compose.n_{split}={n} but the filtered manifest has no kept "
                           f"{OBJECT_SPLIT[split]} objects")
    out_dir = Path(out_dir)
    config = {
        "params": p.model_dump(exclude={"workers"}),
        "objects": objects_fp,
        "backgrounds": backgrounds.fingerprint(),
        "code": _code_fingerprint(),
    }
    prepare_resumable_dir(out_dir, config)
    remove_temp_files(out_dir)

    tasks, todo_shards, reused = _plan_shards(out_dir, sizes, p.shard_size)
    written = _write_shards(tasks, todo_shards, worker_args(p, objects_dir, pools, backgrounds), p.workers, out_dir,
                            progress)
    export_coco(out_dir / "heldout", pools["heldout"].categories, clean=p.query_names == "clean")
    metrics = collect_metrics(out_dir, p, pools, backgrounds)
    if metrics_path is not None:
        atomic_write_json(metrics_path, metrics)
    return {**metrics, "run": {"shards_written": written, "shards_reused": reused}}


def _plan_shards(out_dir: Path, sizes: dict[str, int], shard_size: int
                 ) -> tuple[list[tuple[str, int, int]], dict[tuple[str, int], tuple[Path, int]], int]:
    """The chunks still to compose, the shards they fill ((split, first index) -> (path, end)) and
    how many shards are reused: a shard already on disk is kept unless it is damaged."""
    from pin.synth import shards as sh

    tasks, todo_shards, reused = [], {}, 0
    for split in SPLITS:
        (out_dir / split).mkdir(parents=True, exist_ok=True)
        for k, (start, stop) in enumerate(sh.shard_ranges(sizes[split], shard_size)):
            path = out_dir / split / sh.shard_name(k)
            if path.exists():
                damage = sh.check_shard(path, stop - start)
                if damage is None:
                    reused += 1
                    continue
                print(f"[compose] warning: rebuilding {path}: {damage}")
                path.unlink()
            todo_shards[(split, start)] = (path, stop)
            tasks += [(split, s, min(stop, s + CHUNK)) for s in range(start, stop, CHUNK)]
    return tasks, todo_shards, reused


def _write_shards(tasks: list[tuple[str, int, int]], todo_shards: dict[tuple[str, int], tuple[Path, int]],
                  init_args: tuple, workers: int, out_dir: Path, progress: bool) -> int:
    """Compose ``tasks`` (in ``workers`` processes when more than one) and write each shard of
    ``todo_shards`` as soon as its last chunk arrives; returns the number of shards written."""
    import pickle
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    from pin.progress import tqdm

    from pin.synth import shards as sh

    n_todo = sum(t[2] - t[1] for t in tasks)
    written = 0
    with tqdm(total=n_todo, desc="compose", unit="img", disable=not progress) as bar:
        if workers > 1 and len(tasks) > 1:
            # a ProcessPoolExecutor, not a multiprocessing.Pool: a worker that dies is reported
            # (BrokenProcessPool) instead of respawned forever with the stage hanging at 0%
            pool = ProcessPoolExecutor(min(workers, len(tasks)), mp_context=get_context("spawn"),
                                       initializer=_start_worker, initargs=(pickle.dumps(init_args),))
            results = pool.map(_compose_chunk, tasks)  # in task order
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
        except BrokenProcessPool as err:
            raise PinError(f"a compose worker process died ({err or 'no reason given'}); the {written} shards "
                           f"finished this run are kept under {out_dir}: rerun to resume") from None
        finally:
            if pool is not None:  # queued chunks are dropped after an error / Ctrl-C
                pool.shutdown(wait=True, cancel_futures=True)
            _reset_worker()
    return written


def summary(result: dict) -> str:
    s = result["splits"]
    run = result.get("run", {})
    return (", ".join(f"{k} {v['images']} images/{v['objects']} objects" for k, v in s.items())
            + f"; shards written {run.get('shards_written', 0)}, reused {run.get('shards_reused', 0)}")


__all__ = ["Composer", "image_seed", "load_pools", "check_backgrounds", "run_compose",
           "summary", "SPLITS"]
