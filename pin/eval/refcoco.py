"""RefCOCO (UNC) ``split`` (testA): ``refs(unc).p`` + ``instances.json`` over COCO train2014.

Every ref of the split is kept (the 1..3 objects rule is about category localisation, not
referring expressions), crowd regions included: a referred object is a target. ``sentences: all``
(default) gives one query per referring expression, as the usual RefCOCO protocol counts them;
``first`` gives one per ref.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from pin.categories import query_name
from pin.eval.coco import coco_object, file_name, image_size, read_coco
from pin.eval.common import (AnnImage, AnnObject, bad, clean_text, is_id, new_stats,
                             param_path, select)
from pin.eval.query import Query


class _PlainUnpickler(pickle.Unpickler):
    """refs(unc).p holds only lists, dicts, strings and numbers: refuse anything that would import
    code, so a wrong or hostile file cannot run anything."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refuses to load {module}.{name}")


def read_refs(path: Path) -> list:
    for encoding in ("ASCII", "latin1"):  # written by Python 2; latin1 if non-ASCII bytes
        try:
            with open(path, "rb") as f:
                refs = _PlainUnpickler(f, encoding=encoding).load()
            break
        except UnicodeDecodeError:
            continue
        except OSError as err:
            raise bad(path, f"cannot read ({err.strerror or err})") from None
        except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
            raise bad(path, f"not a readable refs pickle ({type(err).__name__}: {err})") from None
    else:
        raise bad(path, "not a readable refs pickle (text encoding)")
    if not isinstance(refs, list):
        raise bad(path, f"expected a list of refs, got {type(refs).__name__}")
    return refs


def _sentences(r: dict) -> list[str]:
    sents = r.get("sentences")
    if not isinstance(sents, list):
        return []
    return [clean_text(s["sent"]) for s in sents
            if isinstance(s, dict) and isinstance(s.get("sent"), str) and clean_text(s["sent"])]


def load_refcoco(cfg) -> tuple[list[Query], dict]:
    p = cfg.paths.refcoco
    refs_path = param_path(p.refs, "eval.paths.refcoco.refs")
    ann = param_path(p.annotations, "eval.paths.refcoco.annotations")
    folder = param_path(p.images, "eval.paths.refcoco.images", "folder")
    refs = read_refs(refs_path)
    cj = read_coco(ann)
    anns = cj.index.anns
    images_by_id = {im["id"]: im for im in cj.images}
    by_image: dict[Any, list[AnnObject]] = {}
    for i, r in enumerate(refs):
        if not isinstance(r, dict):
            raise bad(refs_path, f"ref {i} is not a dict")
        if r.get("split") != p.split:
            continue
        a = anns.get(r.get("ann_id")) if is_id(r.get("ann_id")) else None
        if a is None:
            raise bad(refs_path, f"ref {r.get('ref_id', i)} refers to annotation {r.get('ann_id')!r}, "
                                 f"which is not in {ann.name}")
        texts = _sentences(r)
        if not texts:
            raise bad(refs_path, f"ref {r.get('ref_id', i)} has no sentences")
        texts = {"first": texts[:1], "last": texts[-1:]}.get(p.sentences, texts)
        obj = coco_object(a, tuple(texts))
        obj.key = f"{a['image_id']}:ref{r.get('ref_id', i)}"
        obj.skip = None if obj.skip == "crowd" else obj.skip
        by_image.setdefault(a["image_id"], []).append(obj)
    if not by_image:
        splits = sorted({str(r.get("split")) for r in refs if isinstance(r, dict)})
        raise bad(refs_path, f"no ref in split eval.paths.refcoco.split={p.split!r} (the file's splits: "
                             f"{', '.join(splits) or 'none'})")
    images = []
    for image_id, objs in by_image.items():
        im = images_by_id[image_id]
        images.append(AnnImage(image_id, folder / file_name(im), image_size(im), objs))
    names = {cid: query_name(c["name"]) for cid, c in cj.cats.items()}
    stats = new_stats()
    queries = select("refcoco", images, names, cfg, stats, apply_count_rule=False)
    stats["n_refs"] = len({(q.image_id, q.ann_id) for q in queries})
    return queries, stats
