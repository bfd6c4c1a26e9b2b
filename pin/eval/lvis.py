"""LVIS v1 val: COCO-like JSON whose images point at COCO train2017/val2017 by ``coco_url``.

The readable name is the category's first synonym (the ``name`` is a synset-like key such as
"aerosol_can"). Images are found by ``file_name`` or the basename of ``coco_url``, in the images
folder or its ``train2017/`` / ``val2017/`` sub-folder. The stats count the queries of each
frequency group (``n_queries_r`` / ``_c`` / ``_f``: rare, common, frequent).
"""
from __future__ import annotations

from pathlib import Path

from pin.categories import query_name
from pin.eval.coco import annotations_and_images, coco_images, file_name, file_names, read_coco
from pin.eval.common import new_stats, select
from pin.eval.query import Query


def load_lvis(cfg) -> tuple[list[Query], dict]:
    ann, folder = annotations_and_images("lvis", cfg)
    cj = read_coco(ann)

    def find(im: dict) -> Path:
        url = im.get("coco_url") if isinstance(im.get("coco_url"), str) else ""
        sub = url.rsplit("/", 2)[-2] if url.count("/") >= 2 else ""  # train2017 / val2017
        places = [folder / name for name in file_names(im)] + [folder / sub / name for name in file_names(im) if sub]
        return next((p for p in places if p.is_file()), folder / file_name(im))

    names = {cid: next(n for n in (*map(query_name, c.get("synonyms") or ()), query_name(c["name"])) if n)
             for cid, c in cj.cats.items()}
    stats = new_stats()
    queries = select("lvis", coco_images(cj, folder, find), names, cfg, stats)
    freq = {cid: c.get("frequency") for cid, c in cj.cats.items()}
    for f in ("r", "c", "f"):
        stats[f"n_queries_{f}"] = sum(freq[q.category_id] == f for q in queries)
    return queries, stats
