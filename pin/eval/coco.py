"""COCO-format JSON: COCO val2017, our synthetic held-out set (the compose stage writes it in this
format), and the reader LVIS and RefCOCO's instances.json share.

The fields we use are checked before pycocotools indexes the file, so any shape problem is a
PinError naming the file and the entry. Crowd regions are neither objects nor queries (skipped,
counted).
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pin.categories import query_name
from pin.eval.common import (AnnImage, AnnObject, bad, clean_text, is_id, is_num,
                             new_stats, param_path, read_json, select)
from pin.eval.query import Query


@dataclass
class CocoJson:
    path: Path
    images: list[dict]
    anns: list[dict]
    cats: dict[Any, dict]
    index: Any  # pycocotools.coco.COCO over the validated content


def read_coco(path: Path) -> CocoJson:
    """Parse and check the fields we use, then index with pycocotools."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise bad(path, "expected a JSON object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise bad(path, f"'{key}' must be a list")
    cats: dict[Any, dict] = {}
    for i, c in enumerate(data["categories"]):
        if not (isinstance(c, dict) and is_id(c.get("id")) and isinstance(c.get("name"), str)):
            raise bad(path, f"categories[{i}] needs an id and a string name")
        if not query_name(c["name"]):
            raise bad(path, f"categories[{i}] (id {c['id']!r}) has an empty name {c['name']!r}")
        syn = c.get("synonyms")
        if syn is not None and not (isinstance(syn, list) and all(isinstance(s, str) for s in syn)):
            raise bad(path, f"categories[{i}].synonyms must be a list of strings")
        cats[c["id"]] = c
    ids: dict[Any, int] = {}
    for i, im in enumerate(data["images"]):
        if not (isinstance(im, dict) and is_id(im.get("id"))):
            raise bad(path, f"images[{i}] needs an id")
        if im["id"] in ids:  # pycocotools would keep one and double its queries
            raise bad(path, f"images[{i}]: image id {im['id']!r} is listed twice (also images[{ids[im['id']]}])")
        if not isinstance(im.get("file_name", im.get("coco_url")), str):
            raise bad(path, f"images[{i}] needs a file_name (or an LVIS coco_url)")
        if not all(is_num(im.get(k)) and im[k] > 0 for k in ("width", "height")):
            raise bad(path, f"images[{i}] needs positive width and height")
        ids[im["id"]] = i
    ann_ids: dict[Any, int] = {}
    for i, a in enumerate(data["annotations"]):
        if not (isinstance(a, dict) and is_id(a.get("id"))):
            raise bad(path, f"annotations[{i}] needs an id")
        if a["id"] in ann_ids:
            raise bad(path, f"annotations[{i}]: annotation id {a['id']!r} is listed twice "
                            f"(also annotations[{ann_ids[a['id']]}])")
        ann_ids[a["id"]] = i
        if not (is_id(a.get("image_id")) and a["image_id"] in ids):
            raise bad(path, f"annotations[{i}] (id {a['id']}) refers to image {a.get('image_id')!r}, "
                            "which is not in 'images'")
        if not (is_id(a.get("category_id")) and a["category_id"] in cats):
            raise bad(path, f"annotations[{i}] (id {a['id']}) has unknown category "
                            f"{a.get('category_id')!r}")
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_num(v) for v in bbox)):
            raise bad(path, f"annotations[{i}] (id {a['id']}) needs bbox [x, y, w, h]")
        if "referral" in a and not isinstance(a["referral"], str):
            raise bad(path, f"annotations[{i}] (id {a['id']}): referral must be a string")
    from pycocotools.coco import COCO

    index = COCO()
    index.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        index.createIndex()
    return CocoJson(path, data["images"], data["annotations"], cats, index)


def coco_object(a: dict, texts: tuple[str, ...] = ()) -> AnnObject:
    x, y, w, h = (float(v) for v in a["bbox"])
    skip = "crowd" if a.get("iscrowd") else ("degenerate" if w <= 0 or h <= 0 else None)
    return AnnObject(a["id"], a["category_id"], (x, y, x + w, y + h), skip, texts)


def file_names(im: dict) -> list[str]:
    """Where an image may be, in order: its ``file_name`` and the last part of its ``coco_url``
    (LVIS v0.5 names COCO_val2014_... files while its coco_url points at val2017)."""
    names = [im["file_name"]] if isinstance(im.get("file_name"), str) else []
    url = im.get("coco_url")
    if isinstance(url, str) and url.rsplit("/", 1)[-1] not in names:
        names.append(url.rsplit("/", 1)[-1])
    return names


def file_name(im: dict) -> str:
    """``file_name``, or the last part of LVIS's ``coco_url`` (validated: one is a string)."""
    name = im["file_name"] if "file_name" in im else im["coco_url"]
    return name.rsplit("/", 1)[-1] if "coco_url" in im and "file_name" not in im else name


def image_size(im: dict) -> tuple[int, int]:
    return int(im["width"]), int(im["height"])


def coco_images(cj: CocoJson, folder: Path, find: Callable[[dict], Path] | None = None) -> list[AnnImage]:
    """One record per image; an annotation's ``referral`` (synthetic set) is its query text."""
    out = []
    for im in cj.images:
        anns = cj.index.imgToAnns.get(im["id"], [])
        objs = [coco_object(a, (clean_text(a["referral"]),) if clean_text(a.get("referral") or "") else ())
                for a in anns]
        path = find(im) if find else folder / file_name(im)
        out.append(AnnImage(im["id"], path, image_size(im), objs))
    return out


def annotations_and_images(name: str, cfg) -> tuple[Path, Path]:
    """The ``eval.paths.<name>`` annotations file and images folder, both checked to exist."""
    p = getattr(cfg.paths, name)
    return (param_path(p.annotations, f"eval.paths.{name}.annotations"),
            param_path(p.images, f"eval.paths.{name}.images", "folder"))


def _load_coco_format(name: str, cfg) -> tuple[list[Query], dict]:
    ann, folder = annotations_and_images(name, cfg)
    cj = read_coco(ann)
    names = {cid: query_name(c["name"]) for cid, c in cj.cats.items()}
    stats = new_stats()
    return select(name, coco_images(cj, folder), names, cfg, stats), stats


def load_synthetic(cfg) -> tuple[list[Query], dict]:
    """Our held-out composed set (compose stage): COCO-format JSON + images folder; the
    annotation's ``referral`` (the readable name, or with ``compose.referrals`` a positional
    referral such as "left dog") is the query text."""
    return _load_coco_format("synthetic", cfg)


def load_coco(cfg) -> tuple[list[Query], dict]:
    """COCO val2017: instances_val2017.json + the val2017 folder."""
    return _load_coco_format("coco", cfg)
