"""Localisation metrics, per object (Sec. 5): mIoU over all boxes and by size, P@0.3/P@0.5.

Everything here works in the 224x224 frame the model sees: ground truth is mapped there by
``Query.gt_box_224`` and predictions are parsed there. Per-axis scaling leaves IoU unchanged, so
IoU in this frame equals IoU in original pixels; the frame matters only for the size buckets.

Differences from the authors' evaluation (reference notes): the mean is over objects, not over
batch means; an unparsable answer scores IoU 0 and lowers ``parse_rate`` instead of being
replaced by the top-left grid cell.
"""
from __future__ import annotations

import io
import math
from typing import Any, Iterable, Sequence

import numpy as np

from pin.boxes import box_area, iou, iou_matrix  # noqa: F401  (one IoU for the project; NaN rows give 0)
from pin.io import atomic_write_bytes, atomic_write_json

MEDIUM, LARGE = 32**2, 96**2  # COCO/paper thresholds on box area in the 224 frame
BUCKETS = ("s", "m", "l")
SCALARS = ("miou", "miou_s", "miou_m", "miou_l", "p30", "p50", "parse_rate")

Box = Sequence[float]  # x1, y1, x2, y2


def as_boxes(boxes: Iterable[Box | None] | np.ndarray) -> np.ndarray:
    """Boxes (or None for an unparsable answer) -> float (N, 4) array with NaN rows for None."""
    if isinstance(boxes, np.ndarray):
        arr = boxes.astype(float, copy=False)
        return arr.reshape(0, 4) if arr.size == 0 else arr
    rows = [(math.nan,) * 4 if b is None else tuple(float(v) for v in b) for b in boxes]
    return np.asarray(rows, dtype=float).reshape(-1, 4)


def _area(b: np.ndarray) -> np.ndarray:
    return np.nan_to_num(box_area(b), nan=0.0)


def size_bucket(gt_224: np.ndarray | Sequence[Box]) -> np.ndarray:
    """'s' (< 32^2), 'm' (32^2 .. 96^2) or 'l' (>= 96^2) by ground-truth area in the 224 frame."""
    area = _area(as_boxes(gt_224))
    return np.where(area < MEDIUM, "s", np.where(area < LARGE, "m", "l"))


def _mean(x: np.ndarray) -> float | None:
    return float(x.mean()) if x.size else None  # empty bucket -> null, never 0 or NaN


def score(
    gt_224: np.ndarray | Sequence[Box],
    pred_224: np.ndarray | Sequence[Box | None],
    image_ids: Sequence[Any] | None = None,
) -> dict[str, float | int | None]:
    """Metrics of one method over all queries (one row per ground-truth object).

    ``pred_224`` holds None / NaN rows for unparsable answers: they count as IoU 0.
    """
    gt, pred = as_boxes(gt_224), as_boxes(pred_224)
    if gt.shape != pred.shape:
        raise ValueError(f"{len(gt)} ground-truth boxes but {len(pred)} predictions")
    ious = iou(gt, pred)
    parsed = ~np.isnan(pred).any(axis=1)
    bucket = size_bucket(gt)
    out: dict[str, float | int | None] = {
        "miou": _mean(ious),
        **{f"miou_{k}": _mean(ious[bucket == k]) for k in BUCKETS},
        "p30": _mean((ious >= 0.3).astype(float)),
        "p50": _mean((ious >= 0.5).astype(float)),
        "parse_rate": _mean(parsed.astype(float)),
        "distinct_boxes": int(len(np.unique(np.round(pred[parsed], 3), axis=0))),
        "n_queries": int(len(gt)),
        **{f"n_{k}": int((bucket == k).sum()) for k in BUCKETS},
    }
    if image_ids is not None:
        out["n_images"] = len(set(image_ids))
    return out


def centre_correlation(gt: np.ndarray, pred: np.ndarray) -> tuple[float | None, float | None]:
    """Pearson correlation of the predicted box centre with the true one, x and y, over the
    parsed answers: does the answer follow the object at all? None when it cannot be computed
    (fewer than 3 parsed answers, or a constant answer)."""
    ok = ~np.isnan(pred).any(axis=1)
    out = []
    for axis in (0, 1):
        t = (gt[ok, axis] + gt[ok, axis + 2]) / 2
        q = (pred[ok, axis] + pred[ok, axis + 2]) / 2
        out.append(float(np.corrcoef(t, q)[0, 1]) if ok.sum() > 2 and q.std() > 0 and t.std() > 0 else None)
    return out[0], out[1]


def mean_std(draws: Sequence[dict]) -> dict[str, float | int | None]:
    """Average several draws of a baseline: ``miou`` is the mean, ``miou_std`` the (population)
    standard deviation over draws; counts are taken from the first draw."""
    if not draws:
        raise ValueError("no draws")
    out = dict(draws[0])
    for key in SCALARS:
        vals = [d[key] for d in draws if d.get(key) is not None]
        out[key] = float(np.mean(vals)) if vals else None
        out[f"{key}_std"] = float(np.std(vals)) if vals else None
    out["distinct_boxes"] = int(max(d["distinct_boxes"] for d in draws))
    out["draws"] = len(draws)
    return out


def _clean(obj: Any, ndigits: int = 4) -> Any:
    """JSON-safe: floats rounded, NaN/inf -> null, numpy scalars -> Python, no strings dropped."""
    if isinstance(obj, dict):
        return {str(k): _clean(v, ndigits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v, ndigits) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return round(float(obj), ndigits) if math.isfinite(obj) else None
    return obj


def write_metrics(
    path: str, methods: dict[str, dict], dataset: dict[str, Any], ndigits: int = 4
) -> dict:
    """Write ``metrics/eval/<dataset>.json`` atomically, two levels deep for ``dvc metrics diff``:
    ``{"pin": {"miou": ..}, "raw": {..}, "random": {"miou": .., "miou_std": ..}, "constant": {..},
    "dataset": {"n_queries": .., ...}}``. ``dataset`` keeps numbers only (DVC diffs numbers)."""
    if "dataset" in methods:
        raise ValueError("'dataset' is reserved for the dataset statistics")
    stats = {k: v for k, v in dataset.items() if isinstance(v, (int, float, np.number)) or v is None}
    obj = _clean({**{m: dict(v) for m, v in methods.items()}, "dataset": stats}, ndigits)
    atomic_write_json(path, obj)
    return obj


# --- the per-query predictions table --------------------------------------------------------

def prediction_rows(
    queries: Sequence,
    method: str,
    boxes_224: Sequence[Box | None],
    answers: Sequence[str | None] | None = None,
) -> list[dict]:
    """One row per query for ``data/predictions/<dataset>.parquet``: query, method, raw answer,
    parsed box (224 frame, null when unparsable), ground truth (224 and original), IoU, bucket."""
    if len(boxes_224) != len(queries) or (answers is not None and len(answers) != len(queries)):
        raise ValueError("one prediction (and answer) per query")
    pred = as_boxes(boxes_224)
    gt = as_boxes([q.gt_box_224 for q in queries])
    ious = iou(gt, pred)
    buckets = size_bucket(gt)
    rows = []
    for i, q in enumerate(queries):
        p = None if np.isnan(pred[i]).any() else [float(v) for v in pred[i]]
        rows.append({
            "dataset": q.dataset, "query_id": q.query_id, "image_id": str(q.image_id),
            "ann_id": str(q.ann_id), "category": q.category, "text": q.text, "method": method,
            "answer": None if answers is None else answers[i],
            "pred_box": p, "gt_box": [float(v) for v in gt[i]],
            "gt_box_orig": [float(v) for v in q.gt_box], "iou": float(ious[i]),
            "bucket": str(buckets[i]),
        })
    return rows


def write_predictions(path: str, rows: Sequence[dict]) -> None:
    """All methods' rows for one dataset -> parquet, written atomically."""
    import pandas as pd

    cols = ["dataset", "query_id", "image_id", "ann_id", "category", "text", "method", "answer",
            "pred_box", "gt_box", "gt_box_orig", "iou", "bucket"]
    frame = pd.DataFrame(list(rows), columns=cols)
    frame["answer"] = frame["answer"].astype("string")
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())
