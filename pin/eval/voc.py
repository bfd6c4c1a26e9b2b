"""PASCAL VOC 2007 test: ``ImageSets/Main/<split>.txt`` (``eval.paths.pvoc.split``: test, val,
train or trainval) lists the ids; one XML per image.

``difficult`` objects (0/1, or yes/no, true/false) are neither objects nor queries (skipped,
counted). Sizes and coordinates may be written as floats (``<width>451.0</width>``). VOC boxes are 1-based
inclusive pixel indices: [xmin-1, ymin-1, xmax, ymax] in continuous 0-based coordinates. Class
names become query text by the project's one rule (:func:`pin.categories.query_name`), so a VOC
query says what the mini VLM was pretrained on.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

from pin.categories import query_name
from pin.errors import PinError
from pin.eval.common import AnnImage, AnnObject, bad, new_stats, param_path, select
from pin.eval.query import Query

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)


_FLAGS = {"0": False, "1": True, "0.0": False, "1.0": True, "no": False, "yes": True, "false": False,
          "true": True}


def _voc_object(path: Path, obj: ET.Element, k: int, image_id: str) -> AnnObject:
    name = (obj.findtext("name") or "").strip()
    if name not in VOC_CLASSES:
        raise bad(path, f"object {k}: unknown VOC class {name!r}")
    flag = (obj.findtext("difficult") or "0").strip().lower() or "0"
    if flag not in _FLAGS:
        raise bad(path, f"object {k} ({name}): <difficult> must be 0 or 1 (or yes/no, true/false), got {flag!r}")
    difficult = _FLAGS[flag]
    bb = obj.find("bndbox")
    try:
        x1, y1, x2, y2 = (float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            raise ValueError
    except (AttributeError, TypeError, ValueError, OverflowError):
        raise bad(path, f"object {k} ({name}): needs bndbox xmin/ymin/xmax/ymax numbers") from None
    box = (x1 - 1, y1 - 1, x2, y2)  # 1-based inclusive -> 0-based continuous
    skip = "difficult" if difficult else ("degenerate" if box[2] <= box[0] or box[3] <= box[1] else None)
    return AnnObject(f"{image_id}_{k}", name, box, skip)


def _voc_image(path: Path, jpegs: Path, image_id: str) -> AnnImage:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise bad(path, f"not valid XML ({err})") from None
    except OSError as err:
        raise bad(path, f"cannot read ({err.strerror or err})") from None
    try:  # some tools write <width>451.0</width>
        fw, fh = float(root.findtext("size/width")), float(root.findtext("size/height"))
        if not (math.isfinite(fw) and math.isfinite(fh) and fw >= 1 and fh >= 1):
            raise ValueError
        w, h = round(fw), round(fh)
    except (TypeError, ValueError):
        raise bad(path, "needs size/width and size/height (positive numbers of pixels)") from None
    fname = (root.findtext("filename") or f"{image_id}.jpg").strip()
    objs = [_voc_object(path, o, k, image_id) for k, o in enumerate(root.findall("object"))]
    return AnnImage(image_id, jpegs / fname, (w, h), objs)


def load_pvoc(cfg) -> tuple[list[Query], dict]:
    root = param_path(cfg.paths.pvoc.root, "eval.paths.pvoc.root", "folder")
    split = cfg.paths.pvoc.split
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        have = sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt") if "_" not in p.stem)
        raise PinError(f"{listing}: file not found (eval.paths.pvoc.root must be the VOC2007 folder; "
                       f"eval.paths.pvoc.split={split!r}" + (f", lists here: {', '.join(have)})" if have else ")"))
    ids = [line.split()[0] for line in listing.read_text(errors="replace").splitlines() if line.strip()]
    from pin.progress import tqdm

    images = []
    for image_id in tqdm(ids, desc="pvoc: read annotations", unit="xml", leave=False):
        xml = root / "Annotations" / f"{image_id}.xml"
        if not xml.is_file():
            raise PinError(f"{xml}: file not found (listed in {listing})")
        images.append(_voc_image(xml, root / "JPEGImages", image_id))
    names = {c: query_name(c) for c in VOC_CLASSES}
    stats = new_stats()
    return select("pvoc", images, names, cfg, stats), stats
