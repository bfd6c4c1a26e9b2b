"""What every evaluation loader shares: the parsed annotation records, path and file checks, and
the selection (boxes cut to the image, the 1..max_objects rule, missing images, one query per
object, the seeded subsample).

A loader turns its format into ``AnnImage`` records and hands them to :func:`select`. Category
names become query text by the project's one rule, :func:`pin.categories.query_name`.
"""
from __future__ import annotations

import json
import math
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pin.errors import PinError
from pin.eval.query import Query


@dataclass
class AnnObject:
    ann_id: int | str
    category_id: int | str
    box: tuple[float, float, float, float]  # xyxy original pixels
    skip: str | None = None  # "crowd" | "difficult" | "degenerate" | "outside": not an object, not a query
    texts: tuple[str, ...] = ()  # query texts; empty -> the readable category name
    key: str | None = None  # query id stem when ann_id is not unique per query (RefCOCO: ref id)


@dataclass
class AnnImage:
    image_id: int | str
    path: Path
    size: tuple[int, int]
    objects: list[AnnObject]


def new_stats() -> dict[str, int]:
    keys = ("n_images_total", "n_images_selected", "n_images_empty", "n_images_too_many",
            "n_missing_images", "n_crowd_skipped", "n_difficult_skipped", "n_degenerate_skipped",
            "n_outside_skipped", "n_boxes_clipped", "n_queries_total", "n_queries", "n_images")
    return dict.fromkeys(keys, 0)


def param_path(value: str | None, param: str, kind: str = "file") -> Path:
    """The path a param names, which must exist (``kind``: "file" or "folder")."""
    if value is None or str(value).strip() == "":
        raise PinError(f"{param} is not set (point it at the local copy; nothing is downloaded)")
    path = Path(value)
    ok = path.is_dir() if kind == "folder" else path.is_file()
    if not ok:
        raise PinError(f"{path}: {kind} not found (set {param})")
    return path


def bad(path: Path, msg: str) -> PinError:
    return PinError(f"{path}: {msg}")


def is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def is_id(x: Any) -> bool:
    return (isinstance(x, int) and not isinstance(x, bool)) or isinstance(x, str)


def read_json(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise bad(path, f"not valid JSON ({err})") from None
    except OSError as err:
        raise bad(path, f"cannot read ({err.strerror or err})") from None


def clean_text(text: str) -> str:
    """Query text as one line of printable words: control characters and lone surrogates (valid
    JSON, unwritable as UTF-8) become spaces, runs of whitespace one space."""
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Cs") else ch for ch in text)
    return " ".join(text.split())


def clip_to_image(o: AnnObject, size: tuple[int, int], stats: dict) -> None:
    """A box reaching outside its image is cut to the image (counted); one with nothing inside
    the image is not an object (skipped as "outside", counted)."""
    if o.skip is not None:
        return
    w, h = size
    x1, y1, x2, y2 = o.box
    c = (min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h))
    if c[2] <= c[0] or c[3] <= c[1]:
        o.skip = "outside"
    elif c != tuple(o.box):
        o.box = c
        stats["n_boxes_clipped"] += 1


def _why_none(stats: dict, cfg) -> str:
    """Which selection rule removed how many images (and the boxes behind the empty ones)."""
    skipped = [f"{stats[f'n_{k}_skipped']} {what}" for k, what in (
        ("crowd", "crowd"), ("difficult", "difficult"), ("degenerate", "with no area"),
        ("outside", "outside their image")) if stats[f"n_{k}_skipped"]]
    parts = [f"{stats['n_images_empty']} have no usable box"
             + (f" (boxes skipped: {', '.join(skipped)})" if skipped else ""),
             f"{stats['n_images_too_many']} have more than eval.max_objects={cfg.max_objects} objects",
             f"{stats['n_missing_images']} image files are missing"]
    return "; ".join(parts)


def select(name: str, images: list[AnnImage], names: dict, cfg, stats: dict,
           apply_count_rule: bool = True) -> list[Query]:
    """Boxes cut to their image, count-rule, missing images, queries, deterministic subsample.
    ``cfg`` is the ``eval`` params section (max_objects, count, max_missing, max_queries, seed)."""
    stats["n_images_total"] = len(images)
    kept: list[AnnImage] = []
    for im in images:
        for o in im.objects:
            clip_to_image(o, im.size, stats)
        objs = [o for o in im.objects if o.skip is None]
        for o in im.objects:
            if o.skip:
                stats[f"n_{o.skip}_skipped"] += 1
        # the paper's "<= 3 objects" counts every annotation (the authors' code: crowd regions and
        # difficult objects too, so a crowded scene is left out; a box with no area or nothing in
        # the image marks no object); eval.count=queries counts only the objects that become queries
        counted = len(objs) if cfg.count == "queries" else sum(
            o.skip in (None, "crowd", "difficult") for o in im.objects)
        if not objs:
            stats["n_images_empty"] += 1
        elif apply_count_rule and counted > cfg.max_objects:
            stats["n_images_too_many"] += 1
        else:
            kept.append(AnnImage(im.image_id, im.path, im.size, objs))
    present = [im for im in kept if im.path.is_file()]
    stats["n_missing_images"] = missing = len(kept) - len(present)
    if kept and missing > cfg.max_missing * len(kept):
        first = next(im.path for im in kept if not im.path.is_file())
        raise PinError(f"{first.parent}: {missing} of {len(kept)} selected {name} images are missing "
                       f"(first: {first.name}; eval.max_missing={cfg.max_missing})")
    stats["n_images_selected"] = len(present)
    queries = []
    for im in present:
        for o in im.objects:
            cat = names[o.category_id]
            for j, text in enumerate(o.texts or (cat,)):
                stem = o.key if o.key is not None else f"{im.image_id}:{o.ann_id}"
                qid = stem + (f":{j}" if len(o.texts) > 1 else "")
                queries.append(Query(name, qid, im.image_id, im.path, im.size, text, cat,
                                     o.category_id, o.box, o.ann_id))
    stats["n_queries_total"] = len(queries)
    if not queries:
        raise PinError(f"{name}: no query selected from {stats['n_images_total']} images: {_why_none(stats, cfg)}")
    if cfg.max_queries is not None and cfg.max_queries < len(queries):
        idx = np.random.default_rng(cfg.seed).choice(len(queries), cfg.max_queries, replace=False)
        queries = [queries[i] for i in sorted(idx)]
    stats["n_queries"] = len(queries)
    stats["n_images"] = len({q.image_id for q in queries})
    return queries
