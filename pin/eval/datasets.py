"""Evaluation datasets behind one interface: ``load_queries(name, cfg) -> (queries, stats)``.

Nothing is downloaded: every path is a param (``eval.paths.<dataset>``). The selection follows
Sec. 5 of the paper: images with 1..``max_objects`` (3) annotated objects, one query per ground
truth object, the object's readable category name as the query text. Unlike the authors' code,
crowd regions (COCO) and ``difficult`` objects (VOC) are neither objects nor queries: they are
skipped and counted in ``stats``. RefCOCO keeps every ref of the split (the 1..3 rule is about
category localisation, not referring expressions).

Choices worth knowing:
- VOC names: only the three run-together names are split ("diningtable" -> "dining table",
  "pottedplant" -> "potted plant", "tvmonitor" -> "tv monitor"); "aeroplane" and "motorbike"
  are readable English already and stay as VOC spells them.
- VOC boxes are 1-based inclusive pixel indices: [xmin-1, ymin-1, xmax, ymax] in continuous
  0-based coordinates.
- LVIS: the readable name is the category's first synonym with "_" -> " " (the ``name`` is a
  synset-like key such as "aerosol_can"). Images are found by ``file_name`` or the basename of
  ``coco_url``, in the images folder or its ``train2017/`` / ``val2017/`` sub-folder.
- RefCOCO: ``sentences: all`` (default) gives one query per referring expression, as the usual
  RefCOCO protocol counts them; ``first`` gives one per ref.
- Synthetic: the compose stage's ``referral`` annotation field (the readable name, or with
  ``compose.referrals`` a positional referral such as "left dog") is the query text.
- Boxes are cut to their image (``n_boxes_clipped``); a box with nothing inside the image, or no
  area, is not an object (``n_outside_skipped``, ``n_degenerate_skipped``). Category names and
  query texts lose control characters and extra whitespace; an empty category name is an error.
- Missing image files are skipped and counted; more than ``max_missing`` of the selected images
  missing is an error. A dataset that selects no query at all is an error too.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import pickle
import unicodedata
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pin.errors import PinError
from pin.eval.metrics import FRAME
from pin.params import EvalParams

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
VOC_READABLE = {"diningtable": "dining table", "pottedplant": "potted plant", "tvmonitor": "tv monitor"}


@dataclass(frozen=True)
class Query:
    """One localisation query: find ``text`` in the image; the answer is scored against gt_box."""

    dataset: str
    query_id: str  # unique within the dataset
    image_id: int | str
    image_path: Path
    image_size: tuple[int, int]  # (W, H) of the original image
    text: str  # what the prompt asks for: readable category name or referring expression
    category: str  # readable category name
    category_id: int | str
    gt_box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original pixels
    ann_id: int | str

    @property
    def gt_box_224(self) -> tuple[float, float, float, float]:
        """The ground truth in the frame the model sees: the image squashed to 224x224."""
        return to_frame(self.gt_box, self.image_size)

    def load_image(self):
        from PIL import Image

        try:
            with Image.open(self.image_path) as im:
                return im.convert("RGB")
        except Exception as err:  # noqa: BLE001 - truncated, corrupt, decompression bomb, not an image
            raise PinError(f"{self.image_path}: cannot read image ({type(err).__name__}: {err})") from None


def to_frame(box, size: tuple[float, float], frame: int = FRAME) -> tuple[float, float, float, float]:
    """Original pixels -> the ``frame`` x ``frame`` resize: x scaled by frame/W, y by frame/H."""
    sx, sy = frame / size[0], frame / size[1]
    x1, y1, x2, y2 = box
    return (x1 * sx, y1 * sy, x2 * sx, y2 * sy)


def from_frame(box, size: tuple[float, float], frame: int = FRAME) -> tuple[float, float, float, float]:
    """Inverse of ``to_frame``: a box predicted in the 224 frame -> original pixels."""
    return to_frame(box, (frame * frame / size[0], frame * frame / size[1]), frame)


# --- shared plumbing --------------------------------------------------------------------------

@dataclass
class _Object:
    ann_id: int | str
    category_id: int | str
    box: tuple[float, float, float, float]  # xyxy original pixels
    skip: str | None = None  # "crowd" | "difficult" | "degenerate" | "outside": not an object, not a query
    texts: tuple[str, ...] = ()  # query texts; empty -> the readable category name
    key: str | None = None  # query id stem when ann_id is not unique per query (RefCOCO: ref id)


@dataclass
class _Image:
    image_id: int | str
    path: Path
    size: tuple[int, int]
    objects: list[_Object]


def _stats() -> dict[str, int]:
    keys = ("n_images_total", "n_images_selected", "n_images_empty", "n_images_too_many",
            "n_missing_images", "n_crowd_skipped", "n_difficult_skipped", "n_degenerate_skipped",
            "n_outside_skipped", "n_boxes_clipped", "n_queries_total", "n_queries", "n_images")
    return dict.fromkeys(keys, 0)


def _need(value: str | None, param: str) -> Path:
    if value is None or str(value).strip() == "":
        raise PinError(f"{param} is not set (point it at the local copy; nothing is downloaded)")
    return Path(value)


def _exists(path: Path, param: str, kind: str = "file") -> Path:
    ok = path.is_dir() if kind == "folder" else path.is_file()
    if not ok:
        raise PinError(f"{path}: {kind} not found (set {param})")
    return path


def _bad(path: Path, msg: str) -> PinError:
    return PinError(f"{path}: {msg}")


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_id(x: Any) -> bool:
    return (isinstance(x, int) and not isinstance(x, bool)) or isinstance(x, str)


def _read_json(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise _bad(path, f"not valid JSON ({err})") from None
    except OSError as err:
        raise _bad(path, f"cannot read ({err.strerror or err})") from None


def _clip_to_image(o: _Object, size: tuple[int, int], stats: dict) -> None:
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


def _select(name: str, images: list[_Image], names: dict, cfg: EvalParams, stats: dict,
            apply_count_rule: bool = True) -> list[Query]:
    """Boxes cut to their image, count-rule, missing images, queries, deterministic subsample."""
    stats["n_images_total"] = len(images)
    kept: list[_Image] = []
    for im in images:
        for o in im.objects:
            _clip_to_image(o, im.size, stats)
        objs = [o for o in im.objects if o.skip is None]
        for o in im.objects:
            if o.skip:
                stats[f"n_{o.skip}_skipped"] += 1
        if not objs:
            stats["n_images_empty"] += 1
        elif apply_count_rule and len(objs) > cfg.max_objects:
            stats["n_images_too_many"] += 1
        else:
            kept.append(_Image(im.image_id, im.path, im.size, objs))
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
        raise PinError(f"{name}: no query selected from {stats['n_images_total']} images "
                       f"(images with 1..{cfg.max_objects} objects and an image file)")
    if cfg.max_queries is not None and cfg.max_queries < len(queries):
        idx = np.random.default_rng(cfg.seed).choice(len(queries), cfg.max_queries, replace=False)
        queries = [queries[i] for i in sorted(idx)]
    stats["n_queries"] = len(queries)
    stats["n_images"] = len({q.image_id for q in queries})
    return queries


# --- COCO-format JSON (synthetic, COCO, LVIS, RefCOCO's instances.json) ------------------------

@dataclass
class _CocoJson:
    path: Path
    images: list[dict]
    anns: list[dict]
    cats: dict[Any, dict]
    index: Any  # pycocotools.coco.COCO over the validated content


def _read_coco(path: Path) -> _CocoJson:
    """Parse and check the fields we use, then index with pycocotools. Any shape problem -> a
    PinError naming the file and the entry."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise _bad(path, "expected a JSON object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise _bad(path, f"'{key}' must be a list")
    cats: dict[Any, dict] = {}
    for i, c in enumerate(data["categories"]):
        if not (isinstance(c, dict) and _is_id(c.get("id")) and isinstance(c.get("name"), str)):
            raise _bad(path, f"categories[{i}] needs an id and a string name")
        if not _readable(c["name"]):
            raise _bad(path, f"categories[{i}] (id {c['id']!r}) has an empty name {c['name']!r}")
        syn = c.get("synonyms")
        if syn is not None and not (isinstance(syn, list) and all(isinstance(s, str) for s in syn)):
            raise _bad(path, f"categories[{i}].synonyms must be a list of strings")
        cats[c["id"]] = c
    ids = set()
    for i, im in enumerate(data["images"]):
        if not (isinstance(im, dict) and _is_id(im.get("id"))):
            raise _bad(path, f"images[{i}] needs an id")
        if not isinstance(im.get("file_name", im.get("coco_url")), str):
            raise _bad(path, f"images[{i}] needs a file_name (or an LVIS coco_url)")
        if not all(_is_num(im.get(k)) and im[k] > 0 for k in ("width", "height")):
            raise _bad(path, f"images[{i}] needs positive width and height")
        ids.add(im["id"])
    for i, a in enumerate(data["annotations"]):
        if not (isinstance(a, dict) and _is_id(a.get("id"))):
            raise _bad(path, f"annotations[{i}] needs an id")
        if not (_is_id(a.get("image_id")) and a["image_id"] in ids):
            raise _bad(path, f"annotations[{i}] (id {a['id']}) refers to image {a.get('image_id')!r}, "
                             "which is not in 'images'")
        if not (_is_id(a.get("category_id")) and a["category_id"] in cats):
            raise _bad(path, f"annotations[{i}] (id {a['id']}) has unknown category "
                             f"{a.get('category_id')!r}")
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_num(v) for v in bbox)):
            raise _bad(path, f"annotations[{i}] (id {a['id']}) needs bbox [x, y, w, h]")
        if "referral" in a and not isinstance(a["referral"], str):
            raise _bad(path, f"annotations[{i}] (id {a['id']}): referral must be a string")
    from pycocotools.coco import COCO

    index = COCO()
    index.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        index.createIndex()
    return _CocoJson(path, data["images"], data["annotations"], cats, index)


def _xywh_to_xyxy(b) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in b)
    return (x, y, x + w, y + h)


def _coco_object(a: dict, texts: tuple[str, ...] = ()) -> _Object:
    box = _xywh_to_xyxy(a["bbox"])
    skip = "crowd" if a.get("iscrowd") else ("degenerate" if a["bbox"][2] <= 0 or a["bbox"][3] <= 0 else None)
    return _Object(a["id"], a["category_id"], box, skip, texts)


def _coco_images(cj: _CocoJson, folder: Path, find: Callable[[dict], Path] | None = None) -> list[_Image]:
    out = []
    for im in cj.images:
        anns = cj.index.imgToAnns.get(im["id"], [])
        objs = [_coco_object(a, (_clean_text(a["referral"]),) if _clean_text(a.get("referral") or "") else ())
                for a in anns]
        path = find(im) if find else folder / _file_name(im)
        out.append(_Image(im["id"], path, (int(im["width"]), int(im["height"])), objs))
    return out


def _file_name(im: dict) -> str:
    """``file_name``, or the last part of LVIS's ``coco_url`` (validated: one is a string)."""
    name = im["file_name"] if "file_name" in im else im["coco_url"]
    return name.rsplit("/", 1)[-1] if "coco_url" in im and "file_name" not in im else name


def _clean_text(text: str) -> str:
    """Query text as one line of printable words: control characters and lone surrogates (valid
    JSON, unwritable as UTF-8) become spaces, runs of whitespace one space."""
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Cs") else ch for ch in text)
    return " ".join(text.split())


def _readable(name: str) -> str:
    return _clean_text(name.replace("_", " "))


def _load_coco_like(name: str, cfg: EvalParams) -> tuple[list[Query], dict]:
    p = getattr(cfg.paths, name)
    ann = _exists(_need(p.annotations, f"eval.paths.{name}.annotations"), f"eval.paths.{name}.annotations")
    folder = _exists(_need(p.images, f"eval.paths.{name}.images"), f"eval.paths.{name}.images", "folder")
    cj = _read_coco(ann)
    names = {cid: _readable(c["name"]) for cid, c in cj.cats.items()}
    stats = _stats()
    return _select(name, _coco_images(cj, folder), names, cfg, stats), stats


def load_synthetic(cfg: EvalParams) -> tuple[list[Query], dict]:
    """Our held-out composed set (compose stage): COCO-format JSON + images folder."""
    return _load_coco_like("synthetic", cfg)


def load_coco(cfg: EvalParams) -> tuple[list[Query], dict]:
    """COCO val2017: instances_val2017.json + the val2017 folder."""
    return _load_coco_like("coco", cfg)


def load_lvis(cfg: EvalParams) -> tuple[list[Query], dict]:
    """LVIS v1 val: COCO-like JSON whose images point at COCO train2017/val2017 by coco_url."""
    p = cfg.paths.lvis
    ann = _exists(_need(p.annotations, "eval.paths.lvis.annotations"), "eval.paths.lvis.annotations")
    folder = _exists(_need(p.images, "eval.paths.lvis.images"), "eval.paths.lvis.images", "folder")
    cj = _read_coco(ann)

    def find(im: dict) -> Path:
        url = im.get("coco_url") if isinstance(im.get("coco_url"), str) else ""
        fname = _file_name(im)
        direct = folder / fname
        if direct.is_file():
            return direct
        sub = url.rsplit("/", 2)[-2] if url.count("/") >= 2 else ""  # train2017 / val2017
        return folder / sub / fname if sub else direct

    names = {cid: next(n for n in (*map(_readable, c.get("synonyms") or ()), _readable(c["name"])) if n)
             for cid, c in cj.cats.items()}
    stats = _stats()
    queries = _select("lvis", _coco_images(cj, folder, find), names, cfg, stats)
    freq = {cid: c.get("frequency") for cid, c in cj.cats.items()}
    for f in ("r", "c", "f"):  # LVIS frequency groups: rare / common / frequent
        stats[f"n_queries_{f}"] = sum(freq[q.category_id] == f for q in queries)
    return queries, stats


# --- PASCAL VOC 2007 ----------------------------------------------------------------------------

def _voc_object(path: Path, obj: ET.Element, k: int, image_id: str) -> _Object:
    name = (obj.findtext("name") or "").strip()
    if name not in VOC_CLASSES:
        raise _bad(path, f"object {k}: unknown VOC class {name!r}")
    bb = obj.find("bndbox")
    try:
        x1, y1, x2, y2 = (float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        difficult = int((obj.findtext("difficult") or "0").strip() or 0)
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            raise ValueError
    except (AttributeError, TypeError, ValueError, OverflowError):
        raise _bad(path, f"object {k} ({name}): needs bndbox xmin/ymin/xmax/ymax numbers") from None
    box = (x1 - 1, y1 - 1, x2, y2)  # 1-based inclusive -> 0-based continuous
    skip = "difficult" if difficult else ("degenerate" if box[2] <= box[0] or box[3] <= box[1] else None)
    return _Object(f"{image_id}_{k}", name, box, skip)


def _voc_image(path: Path, jpegs: Path, image_id: str) -> _Image:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise _bad(path, f"not valid XML ({err})") from None
    except OSError as err:
        raise _bad(path, f"cannot read ({err.strerror or err})") from None
    try:
        w, h = int(root.findtext("size/width")), int(root.findtext("size/height"))
        if w <= 0 or h <= 0:
            raise ValueError
    except (TypeError, ValueError):
        raise _bad(path, "needs size/width and size/height (positive integers)") from None
    fname = (root.findtext("filename") or f"{image_id}.jpg").strip()
    objs = [_voc_object(path, o, k, image_id) for k, o in enumerate(root.findall("object"))]
    return _Image(image_id, jpegs / fname, (w, h), objs)


def load_pvoc(cfg: EvalParams) -> tuple[list[Query], dict]:
    """PASCAL VOC 2007 test: ImageSets/Main/test.txt lists the ids; one XML per image."""
    root = _exists(_need(cfg.paths.pvoc.root, "eval.paths.pvoc.root"), "eval.paths.pvoc.root", "folder")
    listing = root / "ImageSets" / "Main" / "test.txt"
    if not listing.is_file():
        raise PinError(f"{listing}: file not found (eval.paths.pvoc.root must be the VOC2007 folder)")
    ids = [line.split()[0] for line in listing.read_text(errors="replace").splitlines() if line.strip()]
    from tqdm import tqdm

    images = []
    for image_id in tqdm(ids, desc="pvoc: read annotations", unit="xml", leave=False):
        xml = root / "Annotations" / f"{image_id}.xml"
        if not xml.is_file():
            raise PinError(f"{xml}: file not found (listed in {listing})")
        images.append(_voc_image(xml, root / "JPEGImages", image_id))
    names = {c: VOC_READABLE.get(c, c) for c in VOC_CLASSES}
    stats = _stats()
    return _select("pvoc", images, names, cfg, stats), stats


# --- RefCOCO (UNC) ------------------------------------------------------------------------------

class _PlainUnpickler(pickle.Unpickler):
    """refs(unc).p holds only lists, dicts, strings and numbers: refuse anything that would import
    code, so a wrong or hostile file cannot run anything."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refuses to load {module}.{name}")


def _read_refs(path: Path) -> list:
    for encoding in ("ASCII", "latin1"):  # written by Python 2; latin1 if non-ASCII bytes
        try:
            with open(path, "rb") as f:
                refs = _PlainUnpickler(f, encoding=encoding).load()
            break
        except UnicodeDecodeError:
            continue
        except OSError as err:
            raise _bad(path, f"cannot read ({err.strerror or err})") from None
        except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
            raise _bad(path, f"not a readable refs pickle ({type(err).__name__}: {err})") from None
    else:
        raise _bad(path, "not a readable refs pickle (text encoding)")
    if not isinstance(refs, list):
        raise _bad(path, f"expected a list of refs, got {type(refs).__name__}")
    return refs


def load_refcoco(cfg: EvalParams) -> tuple[list[Query], dict]:
    """RefCOCO (UNC) ``split`` (testA): refs(unc).p + instances.json over COCO train2014."""
    p = cfg.paths.refcoco
    refs_path = _exists(_need(p.refs, "eval.paths.refcoco.refs"), "eval.paths.refcoco.refs")
    ann = _exists(_need(p.annotations, "eval.paths.refcoco.annotations"), "eval.paths.refcoco.annotations")
    folder = _exists(_need(p.images, "eval.paths.refcoco.images"), "eval.paths.refcoco.images", "folder")
    refs = _read_refs(refs_path)
    cj = _read_coco(ann)
    anns = cj.index.anns
    images_by_id = {im["id"]: im for im in cj.images}
    by_image: dict[Any, list[_Object]] = {}
    for i, r in enumerate(refs):
        if not isinstance(r, dict):
            raise _bad(refs_path, f"ref {i} is not a dict")
        if r.get("split") != p.split:
            continue
        a = anns.get(r.get("ann_id")) if _is_id(r.get("ann_id")) else None
        if a is None:
            raise _bad(refs_path, f"ref {r.get('ref_id', i)} refers to annotation {r.get('ann_id')!r}, "
                                  f"which is not in {ann.name}")
        sents = r.get("sentences")
        texts = []
        if isinstance(sents, list):
            texts = [_clean_text(s["sent"]) for s in sents
                     if isinstance(s, dict) and isinstance(s.get("sent"), str) and _clean_text(s["sent"])]
        if not texts:
            raise _bad(refs_path, f"ref {r.get('ref_id', i)} has no sentences")
        texts = texts[:1] if p.sentences == "first" else texts
        obj = _coco_object(a, tuple(texts))
        obj.key = f"{a['image_id']}:ref{r.get('ref_id', i)}"
        obj.skip = None if obj.skip == "crowd" else obj.skip  # a referred object is a target
        by_image.setdefault(a["image_id"], []).append(obj)
    images = []
    for image_id, objs in by_image.items():
        im = images_by_id[image_id]
        images.append(_Image(image_id, folder / _file_name(im), (int(im["width"]), int(im["height"])), objs))
    names = {cid: _readable(c["name"]) for cid, c in cj.cats.items()}
    stats = _stats()
    queries = _select("refcoco", images, names, cfg, stats, apply_count_rule=False)
    stats["n_refs"] = len({(q.image_id, q.ann_id) for q in queries})
    return queries, stats


LOADERS: dict[str, Callable[[EvalParams], tuple[list[Query], dict]]] = {
    "synthetic": load_synthetic,
    "coco": load_coco,
    "lvis": load_lvis,
    "pvoc": load_pvoc,
    "refcoco": load_refcoco,
}


def load_queries(name: str, cfg: EvalParams) -> tuple[list[Query], dict]:
    """Queries of one evaluation dataset and its selection statistics (all counts)."""
    if name not in LOADERS:
        raise PinError(f"unknown eval dataset {name!r}; choose from {', '.join(LOADERS)}")
    return LOADERS[name](cfg)
