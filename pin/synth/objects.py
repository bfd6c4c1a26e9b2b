"""Object cut-outs and their manifests, as the filter and compose stages read them.

One reader for an object PNG (:func:`read_object`: what "corrupt" means for both stages) and one
for a manifest (:func:`read_manifest`: the same messages for a missing, unreadable or incomplete
file); the compose stage's object pools (:func:`load_object_pools`) come from the filtered manifest.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image

from pin.errors import PinError
from pin.images import ImageError, open_image

# The columns a filtered manifest must have for composing, and those whose values decide the
# composed images (their hash is part of the compose stage's resume fingerprint).
POOL_COLUMNS = ("category", "split", "path", "kept")
FINGERPRINT_COLUMNS = ("split", "category", "index", "path", "seed", "prompt", "width", "height", "backend")


def read_object(path: str | Path) -> Image.Image:
    """Decode an object PNG to RGBA (:func:`pin.images.open_image`); raises ImageError naming the
    file when it is corrupt, truncated or empty, or has no visible pixel."""
    rgba = open_image(path, "RGBA", upright=False)
    if rgba.getchannel("A").getbbox() is None:
        raise ImageError(f"{path}: no visible pixel (alpha is 0 everywhere)")
    return rgba


def load_object(path: str | Path, max_side: int) -> tuple[Image.Image, float]:
    """:func:`read_object`, shrunk to at most ``max_side`` (an object is never pasted larger);
    returns (image, original aspect w/h)."""
    rgba = read_object(path)
    w, h = rgba.size
    if max(w, h) > max_side:
        scale = max_side / max(w, h)
        rgba = rgba.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR,
                           reducing_gap=3.0)
    return rgba, w / h


def read_manifest(path: str | Path, columns: Sequence[str], made_by: str):
    """A manifest Parquet file as a DataFrame; a missing file, one that is not Parquet, or one
    without ``columns`` is a PinError naming the file (and ``made_by``, the stage that writes it)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise PinError(f"{path} not found: run the {made_by} stage first (dvc repro {made_by})")
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001
        raise PinError(f"{path}: not a readable Parquet file ({err})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise PinError(f"{path}: missing columns {missing} (have {list(df.columns)})")
    return df


@dataclass(frozen=True)
class ObjectPool:
    """Kept objects of one split: categories (sorted) and per category the PNG paths."""

    categories: tuple[str, ...]
    paths: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        return sum(len(p) for p in self.paths)


def load_object_pools(filtered: str | Path) -> tuple[dict[str, ObjectPool], str]:
    """Object pools ``train``, ``heldout`` and ``all`` (both, for pretraining) from the filtered
    manifest's kept rows, and a fingerprint of those rows."""
    df = read_manifest(filtered, POOL_COLUMNS, "filter")
    df = df[df["kept"].astype(bool)]
    if len(df) == 0:
        raise PinError(f"{filtered}: no kept objects (the filtered manifest is empty): nothing to compose")
    df = df.assign(category=df["category"].astype(str), split=df["split"].astype(str),
                   path=df["path"].astype(str))
    sort_cols = ["split", "category"] + (["index"] if "index" in df.columns else []) + ["path"]
    df = df.sort_values(sort_cols, kind="stable")
    fp_cols = [c for c in FINGERPRINT_COLUMNS if c in df.columns]
    blob = df[fp_cols].to_csv(index=False).encode()
    fingerprint = hashlib.sha256(blob).hexdigest()[:16]
    pools = {}
    for obj_split in ("train", "heldout"):
        part = df[df["split"] == obj_split]
        cats = tuple(sorted(part["category"].unique().tolist()))
        groups = part.groupby("category", sort=True)["path"].apply(tuple)
        pools[obj_split] = ObjectPool(cats, tuple(groups[c] for c in cats))
    cats = pools["train"].categories + pools["heldout"].categories
    order = sorted(range(len(cats)), key=lambda i: cats[i])
    both = pools["train"].paths + pools["heldout"].paths
    pools["all"] = ObjectPool(tuple(cats[i] for i in order), tuple(both[i] for i in order))
    return pools, fingerprint


__all__ = ["read_object", "load_object", "read_manifest", "ObjectPool", "load_object_pools", "POOL_COLUMNS"]
