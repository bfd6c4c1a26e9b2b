"""Per-object metrics, the metrics JSON and predictions table, and the image-blind baselines."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from pin.eval.baselines import (constant_baseline, constant_box, grid_boxes, mean_iou_against,
                                random_baseline, random_boxes)
from pin.eval.metrics import (as_boxes, iou, iou_matrix, mean_std, prediction_rows, score, size_bucket,
                              write_metrics, write_predictions)
from pin.eval.query import Query


def boxes(rng, n):
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(0.5, 120, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def xywh(b):
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def test_iou_agrees_with_pycocotools():
    rng = np.random.default_rng(0)
    a, b = boxes(rng, 40), boxes(rng, 30)
    want = mask_utils.iou(xywh(a).tolist(), xywh(b).tolist(), [0] * len(b))
    np.testing.assert_allclose(iou_matrix(a, b), want, atol=1e-9)
    np.testing.assert_allclose(iou(a[:30], b), np.diag(want[:30]), atol=1e-9)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 224), min_size=8, max_size=8))
def test_iou_symmetric_bounded(v):
    a, b = np.array([v[:4]]), np.array([v[4:]])
    x, y = iou(a, b), iou(b, a)
    assert x == pytest.approx(y) and 0 <= x[0] <= 1


def test_iou_degenerate_and_unparsable():
    gt = np.array([[0, 0, 10, 10]] * 3, dtype=float)
    pred = as_boxes([None, (5, 5, 5, 9), (10, 10, 0, 0)])  # unparsable, zero width, inverted
    assert iou(gt, pred).tolist() == [0, 0, 0]


def test_size_buckets_in_224_frame():
    b = np.array([[0, 0, 31, 32], [0, 0, 32, 32], [0, 0, 95, 96], [0, 0, 96, 96]], dtype=float)
    assert size_bucket(b).tolist() == ["s", "m", "m", "l"]


def test_score_edge_cases():
    empty = score(np.zeros((0, 4)), [])
    assert empty["n_queries"] == 0 and empty["miou"] is None and empty["parse_rate"] is None
    gt = np.array([[0, 0, 100, 100], [0, 0, 50, 50]], dtype=float)
    none = score(gt, [None, None], image_ids=[1, 1])
    assert none["miou"] == 0 and none["parse_rate"] == 0 and none["distinct_boxes"] == 0
    assert none["miou_s"] is None and none["n_images"] == 1  # no small box: null, not 0
    perfect = score(gt, gt)
    assert perfect["miou"] == perfect["p50"] == perfect["parse_rate"] == 1 and perfect["distinct_boxes"] == 2
    half = score(gt, [gt[0], None])
    assert half["miou"] == 0.5 and half["parse_rate"] == 0.5 and half["miou_l"] == 1 and half["miou_m"] == 0
    with pytest.raises(ValueError):
        score(gt, [None])


def test_per_object_not_per_batch():
    gt = np.array([[0, 0, 100, 100]] * 3, dtype=float)
    pred = np.array([[0, 0, 100, 100], [0, 0, 50, 100], [0, 0, 50, 100]], dtype=float)
    assert score(gt, pred)["miou"] == pytest.approx(2 / 3)  # batches [1], [.5, .5] would give .75


def test_write_metrics_json(tmp_path):
    path = tmp_path / "metrics" / "eval" / "coco.json"
    pin = score(np.array([[0, 0, 100, 100]], float), [(0, 0, 100, 100 / 3)])
    rnd = mean_std([score(np.array([[0, 0, 100, 100]], float), [(0, 0, 50, 100)]),
                    score(np.array([[0, 0, 100, 100]], float), [(0, 0, 100, 100)])])
    write_metrics(path, {"pin": pin, "random": rnd}, {"name": "coco", "n_queries": 1, "nan": float("nan")})
    got = json.loads(path.read_text())
    assert got["pin"]["miou"] == 0.3333 and got["pin"]["miou_s"] is None
    assert got["random"]["miou"] == 0.75 and got["random"]["miou_std"] == 0.25
    assert got["dataset"] == {"n_queries": 1, "nan": None}  # strings dropped, NaN -> null
    assert "NaN" not in path.read_text()
    with pytest.raises(ValueError):
        write_metrics(path, {"dataset": {}}, {})


def test_predictions_table(tmp_path):
    q = [Query("coco", f"1:{i}", 1, tmp_path / "x.jpg", (448, 224), "cat", "cat", 3,
               (0.0, 0.0, 448.0, 224.0), i) for i in range(2)]
    rows = prediction_rows(q, "pin", [(0, 0, 224, 224), None], ["[0,0,224,224]", "garbage"])
    rows += prediction_rows(q, "constant", [(0, 0, 112, 224)] * 2)
    write_predictions(tmp_path / "p.parquet", rows)
    df = pd.read_parquet(tmp_path / "p.parquet")
    assert len(df) == 4 and df["iou"].tolist() == [1.0, 0.0, 0.5, 0.5]
    assert df["pred_box"].iloc[1] is None and df["answer"].isna().tolist() == [False, False, True, True]
    assert list(df["gt_box"].iloc[0]) == [0, 0, 224, 224]


def test_random_baseline_deterministic():
    rng = np.random.default_rng(1)
    train, gt = boxes(rng, 300), boxes(rng, 50)
    m1, b1 = random_baseline(gt, train, draws=4, seed=0)
    m2, b2 = random_baseline(gt, train, draws=4, seed=0)
    assert m1 == m2 and np.array_equal(b1, b2) and m1["draws"] == 4 and m1["miou_std"] > 0
    assert not np.array_equal(random_boxes(train, 50, 0, 0), random_boxes(train, 50, 0, 1))
    assert set(map(tuple, b1)) <= set(map(tuple, train))  # whole training boxes


def test_grid_boxes():
    g = grid_boxes(8)
    assert len(g) == math.comb(9, 2) ** 2 and len(np.unique(g, axis=0)) == len(g)
    assert (g[:, 2] > g[:, 0]).all() and (g[:, 3] > g[:, 1]).all() and g.max() == 224 and g.min() == 0


def test_constant_box_beats_every_grid_box():
    rng = np.random.default_rng(2)
    train = boxes(rng, 400).clip(0, 224)
    best = constant_box(train, grid=8)
    best_score = mean_iou_against(best[None], train)[0]
    assert (mean_iou_against(grid_boxes(8), train) <= best_score + 1e-12).all()
    assert (mean_iou_against(train, train) <= best_score + 1e-12).all()
    assert np.array_equal(best, constant_box(train, grid=8))  # deterministic
    metrics, box = constant_baseline(train, train, grid=8)
    assert metrics["miou"] == pytest.approx(best_score) and metrics["distinct_boxes"] == 1


def test_centre_correlation_follows_the_answer_not_the_parse_failures():
    from pin.eval.metrics import centre_correlation

    gt = np.array([[0, 0, 28, 28], [56, 0, 84, 28], [112, 112, 168, 140], [196, 28, 224, 56]], float)
    assert centre_correlation(gt, gt) == pytest.approx((1.0, 1.0))
    mirrored = gt.copy()
    mirrored[:, [0, 2]] = 224 - gt[:, [2, 0]]
    assert centre_correlation(gt, mirrored)[0] == pytest.approx(-1.0)
    constant = np.repeat(gt[2:3], 4, axis=0)
    assert centre_correlation(gt, constant) == (None, None)  # one box for every query: undefined
    unparsed = gt.copy()
    unparsed[0] = np.nan
    assert centre_correlation(gt, unparsed) == pytest.approx((1.0, 1.0))
