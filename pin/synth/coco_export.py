"""COCO-format export of a composed split (the zero-shot heldout set), so the evaluation reads
synthetic and real data through one loader.

``<split_dir>/annotations.json`` (loads in ``pycocotools.coco.COCO``) with images written to
``<split_dir>/images/<image_id>.jpg|png``; ``file_name`` is relative to that ``images`` folder (the
COCO convention; ``info.image_dir`` names it). Boxes are COCO ``[x, y, w, h]`` in pixels (x2/y2 of
the shard boxes are exclusive, so w = x2 - x1). Ids start at 1. Extra annotation fields: ``referral``,
``grid_box``, ``source``, ``order`` (paste order; later objects lie on top). Categories: one per kept
heldout category (sorted), ``name`` its query name (:func:`pin.categories.query_name`), ``key``
the raw category.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pin.categories import query_name
from pin.io import atomic_write_bytes, atomic_write_json

EXT = {"jpeg": "jpg", "png": "png"}


def export_coco(split_dir: str | Path, categories: Sequence[str], *, images_dir: str = "images",
                clean: bool | None = None) -> dict:
    """Write images + annotations.json for the shards in ``split_dir``; returns the COCO dict."""
    from pin.synth.shards import iter_records

    split_dir = Path(split_dir)
    cat_ids = {c: i + 1 for i, c in enumerate(sorted(categories))}
    coco: dict = {
        "info": {"description": "PIN synthetic zero-shot heldout set", "image_dir": images_dir},
        "licenses": [],
        "categories": [{"id": i, "name": query_name(c, clean), "key": c, "supercategory": "object"}
                       for c, i in cat_ids.items()],
        "images": [],
        "annotations": [],
    }
    img_root = split_dir / images_dir
    img_root.mkdir(parents=True, exist_ok=True)
    ann_id = 0
    for rec in iter_records(split_dir):
        file_name = f"{rec['image_id']}.{EXT[rec['format']]}"
        target = img_root / file_name
        if not target.exists() or target.stat().st_size != len(rec["image"]):
            atomic_write_bytes(target, rec["image"])
        coco["images"].append({
            "id": rec["image_id"], "file_name": file_name, "width": rec["width"],
            "height": rec["height"], "background": rec["background"], "seed": rec["seed"],
        })
        for order, ob in enumerate(rec["objects"]):
            ann_id += 1
            x1, y1, x2, y2 = ob["box"]
            coco["annotations"].append({
                "id": ann_id, "image_id": rec["image_id"], "category_id": cat_ids[ob["category"]],
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                "referral": ob["referral"], "grid_box": list(ob["grid_box"]), "source": ob["source"],
                "order": order,
            })
    atomic_write_json(split_dir / "annotations.json", coco)
    return coco
