"""Tiny data sets in the layouts the paper profile reads, a handful of generated pictures each:

* BG-20k: ``BG-20k/train/*.jpg``;
* COCO val2017: ``coco/annotations/instances_val2017.json`` + ``coco/val2017/*.jpg``;
* LVIS v1 val: ``lvis/lvis_v1_val.json`` whose images name COCO pictures only by ``coco_url``
  (found under the COCO root's ``val2017/``, as the README's ``eval.paths.lvis.images=/data/coco``);
* PASCAL VOC 2007: ``VOCdevkit/VOC2007/{Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/test.txt}``;
* RefCOCO (UNC): ``refcoco/refs(unc).p`` (a protocol-2 pickle, as the Python 2 original) +
  ``refcoco/instances.json`` over ``coco/train2014/COCO_train2014_*.jpg``.

Each picture is a noise background with coloured rectangles where its boxes are. Each set also
holds what its loader must skip (a crowd region, a ``difficult`` VOC object, an image with more
objects than ``eval.max_objects``), so the selection is exercised as on the real files.
"""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# (category, box x1 y1 x2 y2 in pixels) per picture; the 4-object picture is dropped by the count rule
SCENES = [
    [("cat", (8, 10, 50, 60))],
    [("dog", (30, 5, 90, 70)), ("car", (2, 40, 30, 76))],
    [("person", (10, 10, 40, 75)), ("cat", (50, 30, 90, 70)), ("dog", (60, 2, 94, 28))],
    [("car", (0, 0, 30, 30)), ("car", (40, 0, 70, 30)), ("dog", (0, 40, 30, 70)), ("cat", (40, 40, 70, 70))],
]
SIZE = (96, 80)  # W, H
COCO_IDS = {"person": 1, "car": 3, "cat": 17, "dog": 18}  # COCO's own category ids
VOC_NAMES = {"person": "person", "car": "car", "cat": "cat", "dog": "dog"}
LVIS_CATS = {"cat": (225, "f"), "dog": (378, "f"), "car": (207, "c"), "person": (793, "r")}  # id, frequency
COLOURS = {"cat": (220, 120, 30), "dog": (60, 60, 200), "car": (200, 30, 30), "person": (30, 160, 60)}
REFERRALS = {"cat": ["cat on the left", "orange cat"], "dog": ["the dog"], "car": ["red car"],
             "person": ["person standing"]}


@dataclass(frozen=True)
class DataSets:
    backgrounds: Path
    coco_annotations: Path
    coco_images: Path
    coco_root: Path
    lvis_annotations: Path
    voc_root: Path
    refcoco_refs: Path
    refcoco_annotations: Path
    refcoco_images: Path


def _picture(scene, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    draw = ImageDraw.Draw(im)
    for cat, box in scene:
        draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=COLOURS[cat])
    return im


def write_backgrounds(folder: Path, n: int = 6) -> Path:
    """BG-20k's layout: plain JPEGs in ``train/`` (sizes vary, as real backgrounds do)."""
    train = folder / "train"
    train.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng(100 + i)
        h, w = 120 + 16 * i, 160 - 8 * i
        base = rng.integers(0, 256, 3)
        ramp = np.linspace(0, 1, w)[None, :, None] * rng.integers(-80, 80, 3)
        arr = np.clip(base + ramp + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(train / f"h_{i:05d}.jpg", quality=90)
    return train


def _coco_entries(prefix: str, first_id: int):
    images, anns = [], []
    for i, scene in enumerate(SCENES):
        image_id = first_id + i
        images.append({"id": image_id, "file_name": f"{prefix}{image_id:012d}.jpg", "width": SIZE[0],
                       "height": SIZE[1], "license": 1, "date_captured": "2013-11-14 16:28:13"})
        for k, (cat, (x1, y1, x2, y2)) in enumerate(scene):
            w, h = x2 - x1, y2 - y1
            anns.append({"id": image_id * 10 + k, "image_id": image_id, "category_id": COCO_IDS[cat],
                         "bbox": [float(x1), float(y1), float(w), float(h)], "area": float(w * h),
                         "iscrowd": 0, "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]]})
    return images, anns


def _coco_categories() -> list[dict]:
    return [{"id": i, "name": n, "supercategory": "thing"} for n, i in sorted(COCO_IDS.items(), key=lambda t: t[1])]


def _save_pictures(folder: Path, images: list[dict], seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (im, scene) in enumerate(zip(images, SCENES)):
        _picture(scene, seed + i).save(folder / im["file_name"], quality=92)


def write_coco(root: Path) -> tuple[Path, Path]:
    """instances_val2017.json + val2017/; one extra crowd region on the first picture."""
    images, anns = _coco_entries("", 139)
    anns.append({"id": 99999, "image_id": images[0]["id"], "category_id": COCO_IDS["person"],
                 "bbox": [60.0, 40.0, 30.0, 30.0], "area": 900.0, "iscrowd": 1,
                 "segmentation": {"counts": [0, 900], "size": [SIZE[1], SIZE[0]]}})
    ann_path = root / "annotations" / "instances_val2017.json"
    ann_path.parent.mkdir(parents=True, exist_ok=True)
    ann_path.write_text(json.dumps({"info": {"description": "rehearsal stand-in"}, "licenses": [],
                                    "images": images, "annotations": anns, "categories": _coco_categories()}))
    _save_pictures(root / "val2017", images, seed=0)
    return ann_path, root / "val2017"


def write_lvis(path: Path, coco_ann: Path) -> Path:
    """LVIS v1's JSON over the COCO val2017 pictures: no file_name, a coco_url, synset-style names."""
    coco = json.loads(coco_ann.read_text())
    images = [{"id": im["id"], "coco_url": f"http://images.cocodataset.org/val2017/{im['file_name']}",
               "width": im["width"], "height": im["height"], "license": 1, "neg_category_ids": [],
               "not_exhaustive_category_ids": [], "flickr_url": "", "date_captured": im["date_captured"]}
              for im in coco["images"]]
    by_coco = {i: n for n, i in COCO_IDS.items()}
    anns = [{"id": a["id"], "image_id": a["image_id"], "category_id": LVIS_CATS[by_coco[a["category_id"]]][0],
             "bbox": a["bbox"], "area": a["area"], "segmentation": a["segmentation"]}
            for a in coco["annotations"] if not a["iscrowd"]]  # LVIS has no crowd regions
    cats = [{"id": cid, "name": f"{n}_(animal)" if n in ("cat", "dog") else n, "synonyms": [n],
             "synset": f"{n}.n.01", "def": f"a {n}", "frequency": f, "image_count": 1, "instance_count": 1}
            for n, (cid, f) in LVIS_CATS.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"info": {}, "licenses": [], "images": images, "annotations": anns,
                                "categories": cats}))
    return path


def write_voc(root: Path) -> Path:
    """VOC2007: one XML per picture (1-based inclusive boxes), a ``difficult`` object, test.txt."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    for i, scene in enumerate(SCENES):
        image_id = f"{i + 1:06d}"
        ids.append(image_id)
        _picture(scene, 50 + i).save(root / "JPEGImages" / f"{image_id}.jpg", quality=92)
        objects = [(VOC_NAMES[c], b, 0) for c, b in scene] + ([("person", (70, 50, 90, 78), 1)] if i == 0 else [])
        xml = "".join(
            f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>{d}</difficult>"
            f"<bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            for n, (x1, y1, x2, y2), d in objects)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>"
            f"<size><width>{SIZE[0]}</width><height>{SIZE[1]}</height><depth>3</depth></size>"
            f"<segmented>0</segmented>{xml}</annotation>")
    (root / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def write_refcoco(folder: Path, train2014: Path) -> tuple[Path, Path]:
    """refs(unc).p (testA and val refs) + instances.json over COCO train2014 file names."""
    images, anns = _coco_entries("COCO_train2014_", 9)
    _save_pictures(train2014, images, seed=20)
    folder.mkdir(parents=True, exist_ok=True)
    ann_path = folder / "instances.json"
    ann_path.write_text(json.dumps({"images": images, "annotations": anns, "categories": _coco_categories()}))
    by_coco = {i: n for n, i in COCO_IDS.items()}
    refs, sent_id = [], 0
    for ref_id, a in enumerate(anns):
        name = by_coco[a["category_id"]]
        sents = []
        for text in REFERRALS[name]:
            sents.append({"tokens": text.split(), "raw": text, "sent_id": sent_id, "sent": text})
            sent_id += 1
        im = next(i for i in images if i["id"] == a["image_id"])
        refs.append({"sent_ids": [s["sent_id"] for s in sents], "file_name": im["file_name"][:-4] + f"_{a['id']}.jpg",
                     "ann_id": a["id"], "ref_id": ref_id, "image_id": a["image_id"],
                     "split": "testA" if ref_id % 3 else "val", "sentences": sents, "category_id": a["category_id"]})
    refs_path = folder / "refs(unc).p"
    with open(refs_path, "wb") as f:
        pickle.dump(refs, f, protocol=2)
    return refs_path, ann_path


def write_all(root: Path) -> DataSets:
    """Every data set under ``root/data``."""
    data = root / "data"
    backgrounds = write_backgrounds(data / "BG-20k")
    coco_ann, coco_images = write_coco(data / "coco")
    lvis = write_lvis(data / "lvis" / "lvis_v1_val.json", coco_ann)
    voc = write_voc(data / "VOCdevkit" / "VOC2007")
    refs, ref_ann = write_refcoco(data / "refcoco", data / "coco" / "train2014")
    return DataSets(backgrounds, coco_ann, coco_images, data / "coco", lvis, voc, refs, ref_ann,
                    data / "coco" / "train2014")
