"""Filter stage: drop corrupt objects, bad masks, low CLIP scores and classes that end up too small.

Input: ``data/objects/manifest.parquet`` (generate stage); output: ``data/filtered/manifest.parquet``
= every input row plus ``kept`` (bool), ``reason`` (first failed check, "" when kept) and
``clip_score`` (float, null when not scored), and ``metrics/filter.json``.

Checks, in order (a row gets the first reason that applies):

1. ``corrupt``: the PNG cannot be opened/decoded, has zero size, or has no visible pixel (alpha
   all 0). Counted and listed, never silently skipped; a corrupt fraction above
   ``filter.max_corrupt`` (default 10%) stops the stage (something is wrong with the generate
   output).
2. ``area_small`` / ``area_large``: ``mask_area_frac`` outside ``[min_area, max_area]`` (X-Paste).
   A missing (NaN) area fails as ``area_small``.
3. ``clip`` (backend ``open_clip`` only): score = 100 * cos(object on white, "a photo of a
   {name}"); keep if ``score >= min(min_clip, best_of_class - tolerance)`` (X-Paste rule; the
   best is taken over the rows of the class that reached this check).
4. ``class_too_small``: every survivor of a category with fewer than ``min_per_class``
   survivors (paper: classes with <= 20 images are dropped; the authors' code computed this cut
   but never applied it).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pin.categories import query_name
from pin.errors import PinError
from pin.io import atomic_write_json, tmp_path_for
from pin.params import FilterParams
from pin.synth.objects import read_manifest, read_object

REQUIRED_COLUMNS = ("category", "split", "index", "path", "mask_area_frac")
REASONS = ("corrupt", "area_small", "area_large", "clip", "class_too_small")
CLIP_NOT_APPLIED = "not applied (backend none: no CLIP weights offline)"
MAX_LISTED = 50


def read_objects_manifest(path: str | Path) -> pd.DataFrame:
    """The generate stage's manifest, checked: the filter's input."""
    df = read_manifest(path, REQUIRED_COLUMNS, "generate")
    if len(df) == 0:
        raise PinError(f"{path}: the objects manifest is empty: nothing to filter")
    return df.reset_index(drop=True)


def _truncated(names: list[str], limit: int = MAX_LISTED) -> dict:
    return {"names": names[:limit], "truncated": len(names) > limit}


def filter_objects(
    df: pd.DataFrame,
    objects_dir: str | Path,
    params: FilterParams,
    scorer=None,
    *,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict]:
    """Apply the checks to a manifest; returns (annotated manifest, metrics)."""
    from pin.progress import tqdm

    objects_dir = Path(objects_dir)
    n = len(df)
    reason = np.array([""] * n, dtype=object)
    corrupt_examples: list[str] = []
    for i, rel in enumerate(tqdm(df["path"].tolist(), desc="filter: check PNGs", disable=not progress)):
        try:
            read_object(objects_dir / rel)
        except Exception as err:  # noqa: BLE001 - any decode failure means a corrupt file
            reason[i] = "corrupt"
            if len(corrupt_examples) < 10:
                # open_image's ImageError names the file and says why; anything else gets its class
                why = str(err) if isinstance(err, PinError) else f"{rel}: {type(err).__name__}: {err}"
                corrupt_examples.append(why[:200])
    n_corrupt = int((reason == "corrupt").sum())
    if n and n_corrupt / n > params.max_corrupt:
        raise PinError(
            f"{n_corrupt}/{n} object PNGs under {objects_dir} are unreadable or empty "
            f"(> filter.max_corrupt={params.max_corrupt:g}); rerun the generate stage. "
            f"Examples: {corrupt_examples[:3]}"
        )

    area = pd.to_numeric(df["mask_area_frac"], errors="coerce").to_numpy(dtype=float)
    ok = reason == ""
    small = ok & ~(area >= params.min_area)  # NaN fails here
    reason[small] = "area_small"
    large = ok & ~small & (area > params.max_area)
    reason[large] = "area_large"

    clip_score = np.full(n, np.nan)
    clip_stats: dict | None = None
    if params.backend == "open_clip":
        if scorer is None:
            from pin.synth.clip_score import ClipScorer

            scorer = ClipScorer.from_pretrained(params.model, params.pretrained, batch_size=params.batch_size)
        todo = np.flatnonzero(reason == "")
        cats = df["category"].astype(str).to_numpy()
        step = max(1, params.batch_size) * 8
        for start in tqdm(range(0, len(todo), step), desc="filter: CLIP", disable=not progress):
            idx = todo[start:start + step]
            images = [read_object(objects_dir / df["path"].iat[i]) for i in idx]
            clip_score[idx] = scorer.score(images, [query_name(cats[i]) for i in idx])
        scored = pd.Series(clip_score[todo], index=todo)
        best = scored.groupby(cats[todo]).transform("max").to_numpy()
        threshold = np.minimum(params.min_clip, best - params.tolerance)
        low = todo[clip_score[todo] < threshold]
        reason[low] = "clip"
        clip_stats = {
            "scorer": getattr(scorer, "name", type(scorer).__name__),
            "scored": int(len(todo)),
            "mean_score": float(np.mean(clip_score[todo])) if len(todo) else None,
            "rule": f"keep if score >= min({params.min_clip}, best_of_class - {params.tolerance})",
        }

    survivors = pd.Series(reason == "").groupby(df["category"].astype(str).to_numpy()).sum()
    small_classes = sorted(survivors[survivors < params.min_per_class].index.tolist())
    too_small = (reason == "") & df["category"].astype(str).isin(small_classes).to_numpy()
    reason[too_small] = "class_too_small"

    out = df.copy()
    out["kept"] = reason == ""
    out["reason"] = reason.astype(str)
    out["clip_score"] = clip_score

    metrics = _metrics(out, params, small_classes, clip_stats, corrupt_examples)
    return out, metrics


def _metrics(out: pd.DataFrame, params: FilterParams, small_classes: list[str],
             clip_stats: dict | None, corrupt_examples: list[str]) -> dict:
    cats_in = sorted(out["category"].astype(str).unique().tolist())
    cats_kept = sorted(out.loc[out["kept"], "category"].astype(str).unique().tolist())
    dropped_classes = sorted(set(cats_in) - set(cats_kept))
    splits = {}
    for split, g in out.groupby(out["split"].astype(str), sort=True):
        splits[split] = {
            "input": int(len(g)),
            "kept": int(g["kept"].sum()),
            "classes_in": int(g["category"].nunique()),
            "classes_kept": int(g.loc[g["kept"], "category"].nunique()),
        }
    metrics = {
        "input": int(len(out)),
        "kept": int(out["kept"].sum()),
        "dropped": {r: int((out["reason"] == r).sum()) for r in REASONS},
        "classes": {
            "in": len(cats_in),
            "kept": len(cats_kept),
            "dropped": len(dropped_classes),
            "dropped_names": _truncated(dropped_classes),
            "too_small": len(small_classes),
        },
        "splits": splits,
        "clip": CLIP_NOT_APPLIED if params.backend == "none" else
        f"applied ({clip_stats['scorer'] if clip_stats else params.backend})",
        "corrupt_examples": corrupt_examples,
        "params": {"min_area": params.min_area, "max_area": params.max_area,
                   "min_per_class": params.min_per_class},
    }
    if clip_stats is not None:
        metrics["clip_stats"] = clip_stats
    return metrics


def write_manifest(df: pd.DataFrame, path: str | Path) -> None:
    """Atomic Parquet write (NaN clip scores become nulls)."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    tmp = tmp_path_for(path)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def run_filter(
    params: FilterParams,
    objects_dir: str | Path = "data/objects",
    out_dir: str | Path = "data/filtered",
    metrics_path: str | Path = "metrics/filter.json",
    *,
    scorer=None,
    progress: bool = True,
) -> dict:
    """The filter stage: manifest in, annotated manifest + metrics out. Returns the metrics."""
    objects_dir = Path(objects_dir)
    df = read_objects_manifest(objects_dir / "manifest.parquet")
    out, metrics = filter_objects(df, objects_dir, params, scorer, progress=progress)
    write_manifest(out, Path(out_dir) / "manifest.parquet")
    atomic_write_json(metrics_path, metrics)
    if metrics["kept"] == 0:
        raise PinError(
            f"no object survived the filter (dropped: {metrics['dropped']}); see {metrics_path}"
            f" - lower filter.min_per_class or check the generate output"
        )
    return metrics


def summary(metrics: dict) -> str:
    d = {k: v for k, v in metrics["dropped"].items() if v}
    c = metrics["classes"]
    clip = "CLIP not applied" if metrics["clip"] == CLIP_NOT_APPLIED else "CLIP applied"
    return (f"kept {metrics['kept']}/{metrics['input']} objects, {c['kept']}/{c['in']} classes; "
            f"dropped {d or 'none'}; {clip}")


def write_object_fixture(
    objects_dir: str | Path,
    categories: dict[str, str],
    per_category: int = 4,
    *,
    canvas: int = 64,
    seed: int = 0,
) -> pd.DataFrame:
    """A tiny objects folder in the generate stage's output format (for tests, benchmarks and
    smoke runs): random coloured shapes (ellipse, box, triangle, diamond) of random aspect ratio,
    tightly cropped RGBA PNGs under ``images/<slug>/<index>.png``, and ``manifest.parquet``.

    ``categories`` maps category name -> split ("train" | "heldout")."""
    from PIL import ImageDraw

    objects_dir = Path(objects_dir)
    rng = np.random.default_rng(seed)
    rows = []
    for category, split in categories.items():
        slug = category.replace(" ", "_")
        for index in range(per_category):
            im = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
            draw = ImageDraw.Draw(im)
            w = int(rng.integers(canvas // 6, canvas))
            h = int(rng.integers(canvas // 6, canvas))
            x0 = int(rng.integers(0, canvas - w + 1))
            y0 = int(rng.integers(0, canvas - h + 1))
            box = (x0, y0, x0 + w - 1, y0 + h - 1)
            colour = tuple(int(v) for v in rng.integers(0, 256, 3)) + (255,)
            shape = index % 4
            if shape == 0:
                draw.ellipse(box, fill=colour)
            elif shape == 1:
                draw.rectangle(box, fill=colour)
            elif shape == 2:
                draw.polygon([(x0, box[3]), (box[2], box[3]), ((x0 + box[2]) // 2, y0)], fill=colour)
            else:
                cx, cy = (x0 + box[2]) // 2, (y0 + box[3]) // 2
                draw.polygon([(cx, y0), (box[2], cy), (cx, box[3]), (x0, cy)], fill=colour)
            alpha = np.asarray(im.getchannel("A"))
            area = float((alpha > 0).mean())
            crop = im.crop(im.getchannel("A").getbbox())
            rel = f"images/{slug}/{index}.png"
            (objects_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            crop.save(objects_dir / rel)
            rows.append({"category": category, "split": split, "index": index, "path": rel,
                         "seed": seed * 100003 + len(rows), "prompt": f"a photo of a single {category}",
                         "width": crop.width, "height": crop.height, "mask_area_frac": area,
                         "backend": "fixture"})
    df = pd.DataFrame(rows)
    write_manifest(df, objects_dir / "manifest.parquet")
    return df


__all__ = ["run_filter", "filter_objects", "read_objects_manifest", "write_manifest", "summary",
           "write_object_fixture", "REASONS", "CLIP_NOT_APPLIED"]
