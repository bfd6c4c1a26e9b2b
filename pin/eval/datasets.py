"""Evaluation datasets behind one interface: ``load_queries(name, cfg) -> (queries, stats)``.

Nothing is downloaded: every path is a param (``eval.paths.<dataset>``). The selection follows
Sec. 5 of the paper: images with 1..``max_objects`` (3) annotations - every annotation counts,
crowd regions (COCO) and ``difficult`` objects (VOC) included, as in the authors' code
(``eval.count``) - and one query per ground truth object, the object's readable category name as
the query text. Unlike the authors' code, crowd regions and difficult objects are never queries:
they are skipped and counted in ``stats``. One module per format says what is particular to it:
:mod:`pin.eval.coco` (COCO and the synthetic set), :mod:`pin.eval.lvis`, :mod:`pin.eval.voc`,
:mod:`pin.eval.refcoco`; what they share (the selection, the readable name) is in
:mod:`pin.eval.common`.

Common to all:
- Category names become query text by the project's one rule (:func:`pin.categories.query_name`):
  VOC's run-together "diningtable" is asked as "dining table", as the mini VLM was pretrained.
- Boxes are cut to their image (``n_boxes_clipped``); a box with nothing inside the image, or no
  area, is not an object (``n_outside_skipped``, ``n_degenerate_skipped``). Category names and
  query texts lose control characters and extra whitespace; an empty category name is an error.
- Missing image files are skipped and counted; more than ``max_missing`` of the selected images
  missing is an error. A dataset that selects no query at all is an error too.
"""
from __future__ import annotations

from typing import Callable

from pin.errors import PinError
from pin.eval.coco import load_coco, load_synthetic
from pin.eval.lvis import load_lvis
from pin.eval.query import Query
from pin.eval.refcoco import load_refcoco
from pin.eval.voc import load_pvoc

LOADERS: dict[str, Callable[..., tuple[list[Query], dict]]] = {
    "synthetic": load_synthetic,
    "coco": load_coco,
    "lvis": load_lvis,
    "pvoc": load_pvoc,
    "refcoco": load_refcoco,
}


def load_queries(name: str, cfg) -> tuple[list[Query], dict]:
    """Queries of one evaluation dataset (``cfg``: the ``eval`` params section) and its selection
    statistics (all counts)."""
    if name not in LOADERS:
        raise PinError(f"unknown eval dataset {name!r}; choose from {', '.join(LOADERS)}")
    return LOADERS[name](cfg)
