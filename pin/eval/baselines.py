"""Image-blind baselines: what a model that never looks at the image can score.

- ``random``: whole boxes drawn uniformly from the training boxes (Sec. 5.1: "bounding boxes
  selected randomly"), one seeded draw per repeat; reported as mean and std over draws.
- ``constant``: the single box with the highest mean IoU on the training boxes. A model that
  ignores the image answers the same box every time, so on the training distribution it cannot
  beat this one (up to the candidate set: every box on a GxG grid plus training boxes).

All boxes live in the 224x224 frame (see ``pin.eval.metrics``).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pin.eval.metrics import mean_std, score
from pin.frame import FRAME


def _train(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    boxes = boxes[np.isfinite(boxes).all(axis=1)]
    if not len(boxes):
        raise ValueError("baselines need at least one training box")
    return boxes


def random_boxes(train_224: np.ndarray, n: int, seed: int, draw: int = 0) -> np.ndarray:
    """``n`` training boxes sampled uniformly with replacement; draw ``d`` uses seed (seed, d)."""
    train = _train(train_224)
    rng = np.random.default_rng([seed, draw])
    return train[rng.integers(0, len(train), size=n)]


def random_baseline(
    gt_224: np.ndarray, train_224: np.ndarray, draws: int, seed: int,
    image_ids: Sequence[Any] | None = None,
) -> tuple[dict, np.ndarray]:
    """Metrics of ``draws`` random draws (mean, ``*_std``) and the first draw's boxes."""
    gt = np.asarray(gt_224, dtype=float).reshape(-1, 4)
    preds = [random_boxes(train_224, len(gt), seed, d) for d in range(draws)]
    return mean_std([score(gt, p, image_ids) for p in preds]), preds[0]


def grid_boxes(grid: int, frame: int = FRAME) -> np.ndarray:
    """Every box whose sides lie on the grid lines frame*i/grid: C(grid+1, 2)^2 boxes."""
    lines = np.arange(grid + 1) * frame / grid
    i1, i2 = np.triu_indices(grid + 1, k=1)
    xs = np.stack([lines[i1], lines[i2]], axis=1)  # (K, 2) all x1 < x2
    a, b = np.meshgrid(np.arange(len(xs)), np.arange(len(xs)), indexing="ij")
    return np.concatenate([xs[a.ravel()][:, [0]], xs[b.ravel()][:, [0]],
                           xs[a.ravel()][:, [1]], xs[b.ravel()][:, [1]]], axis=1)


def mean_iou_against(candidates: np.ndarray, targets: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Mean IoU of each candidate over all targets (``iou_matrix(...).mean(1)``), in chunks with
    in-place arithmetic: ~18k grid candidates x 5k targets in a few seconds."""
    c = np.asarray(candidates, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    t_area = np.clip(t[:, 2] - t[:, 0], 0, None) * np.clip(t[:, 3] - t[:, 1], 0, None)
    out = np.empty(len(c))
    for s in range(0, len(c), chunk):
        cc = c[s:s + chunk, :, None]
        iw = np.minimum(cc[:, 2], t[:, 2])
        iw -= np.maximum(cc[:, 0], t[:, 0])
        np.clip(iw, 0, None, out=iw)
        ih = np.minimum(cc[:, 3], t[:, 3])
        ih -= np.maximum(cc[:, 1], t[:, 1])
        np.clip(ih, 0, None, out=ih)
        iw *= ih  # intersection
        c_area = np.clip(cc[:, 2] - cc[:, 0], 0, None) * np.clip(cc[:, 3] - cc[:, 1], 0, None)
        np.add(c_area, t_area, out=ih)
        ih -= iw  # union
        np.divide(iw, ih, out=iw, where=ih > 0)
        iw[ih <= 0] = 0.0
        out[s:s + chunk] = iw.mean(axis=1)
    return out


def constant_box(train_224: np.ndarray, grid: int = 16, seed: int = 0, max_train: int = 5000,
                 frame: int = FRAME) -> np.ndarray:
    """The box with the highest mean IoU over (a seeded subsample of up to ``max_train``) training
    boxes, among all grid boxes and the subsampled training boxes. Deterministic: ties go to the
    first candidate (grid boxes first, in ``grid_boxes`` order)."""
    train = _train(train_224)
    if len(train) > max_train:
        train = train[np.sort(np.random.default_rng(seed).choice(len(train), max_train, replace=False))]
    candidates = np.concatenate([grid_boxes(grid, frame), train])
    return candidates[int(np.argmax(mean_iou_against(candidates, train)))]


def constant_baseline(
    gt_224: np.ndarray, train_224: np.ndarray, grid: int = 16, seed: int = 0,
    image_ids: Sequence[Any] | None = None,
) -> tuple[dict, np.ndarray]:
    """Metrics of answering ``constant_box`` to every query, and that box."""
    gt = np.asarray(gt_224, dtype=float).reshape(-1, 4)
    box = constant_box(train_224, grid, seed)
    metrics = score(gt, np.repeat(box[None], len(gt), axis=0), image_ids)
    metrics.update({f"box_{k}": float(v) for k, v in zip(("x1", "y1", "x2", "y2"), box)})
    return metrics, box
