"""The evaluate stage's pictures: a gallery of answers and mIoU by size bucket. Each test reads
the pixels: the boxes must be drawn where the boxes are, the bars as tall as the numbers."""
from __future__ import annotations

import numpy as np
from PIL import Image

from pin.eval.query import Query
from pin.frame import FRAME
from pin.viz.gallery import CAPTION, COLS, GT, PAD, PRED, gallery, gallery_size, pick, size_bucket_bars

BACKGROUND = (40, 90, 160)
GT_BOX = (10.0, 20.0, 200.0, 150.0)  # original pixels of a 320 x 200 image
PRED_BOX = (20, 30, 120, 200)  # in the 224 frame


def queries(tmp_path, n):
    path = tmp_path / "im.jpg"
    Image.new("RGB", (320, 200), BACKGROUND).save(path, quality=100)
    return [Query("coco", str(i), i, path, (320, 200), f"object number {i} with a long referring "
                  "expression that has to wrap", "cat", 1, GT_BOX, i) for i in range(n)]


def tile(px: np.ndarray, k: int) -> np.ndarray:
    """The k-th tile's image part (224 x 224) of a gallery sheet."""
    r, c = divmod(k, COLS)
    x, y = PAD + c * (FRAME + PAD), PAD + r * (FRAME + CAPTION + PAD)
    return px[y:y + FRAME, x:x + FRAME].astype(int)


def near(pixel, colour, tol=40) -> bool:
    return bool(np.abs(np.asarray(pixel, dtype=int) - np.asarray(colour)).max() <= tol)


def test_gallery_draws_each_box_where_it_is(tmp_path):
    qs = queries(tmp_path, 20)
    preds = [None if i % 3 == 0 else PRED_BOX for i in range(20)]
    drawn = gallery(qs, preds, tmp_path / "out" / "gallery.png", n=16)
    assert len(drawn) == 16 and drawn[0] == 0 and drawn[-1] == 19
    with Image.open(tmp_path / "out" / "gallery.png") as im:
        assert im.format == "PNG" and im.size == gallery_size(16) == (4 * 228 + 4, 4 * (224 + 40 + 4) + 4)
        px = np.asarray(im.convert("RGB"))
    # the ground truth in the 224 frame: x * 224/320, y * 224/200
    gx1, gy1, gx2, gy2 = (round(v) for v in (10 * 0.7, 20 * 1.12, 200 * 0.7, 150 * 1.12))
    for k, i in enumerate(drawn):
        t = tile(px, k)
        mid_y = (gy1 + gy2) // 2
        assert near(t[mid_y, gx1 + 1], GT) and near(t[mid_y, gx2 - 1], GT), f"tile {k}: green box edges"
        assert near(t[gy1 + 1, (gx1 + gx2) // 2], GT), f"tile {k}: green top edge"
        assert near(t[100, 60], BACKGROUND), f"tile {k}: inside the boxes the image shows"
        pred_left = t[100, PRED_BOX[0]]
        if preds[i] is None:
            assert near(pred_left, BACKGROUND), f"tile {k}: no box for an unparsable answer"
            assert (np.abs(t[:30, :120] - PRED).max(axis=-1) < 40).any(), f"tile {k}: 'unparsable' in red"
        else:
            assert near(pred_left, PRED) and near(t[PRED_BOX[1], 70], PRED), f"tile {k}: red box edges"
            assert near(t[PRED_BOX[1] - 4, 70], BACKGROUND), f"tile {k}: nothing red above the box"
        r, c = divmod(k, COLS)
        caption = px[PAD + r * (FRAME + CAPTION + PAD) + FRAME:][:CAPTION, PAD + c * (FRAME + PAD):][:, :FRAME]
        assert (caption.max(axis=-1) < 80).any(), f"tile {k}: caption text"


def test_gallery_few(tmp_path):
    qs = queries(tmp_path, 3)
    gallery(qs, [None, (0, 0, 300, 300), (np.nan,) * 4], tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as im:
        assert im.size == gallery_size(3) == (3 * 228 + 4, 224 + 40 + 8)
        px = np.asarray(im.convert("RGB"))
    t = tile(px, 1)
    assert near(t[100, 0], PRED) and near(t[100, FRAME - 1], PRED)  # a box past the frame is clipped to it
    assert not (np.abs(tile(px, 2) - PRED).max(axis=-1) < 40)[60:].any()  # NaN: no red box
    assert pick(3, 16) == [0, 1, 2]


C0, C1 = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)  # matplotlib's first two cycle colours


def tallest_bar(px: np.ndarray, colour) -> int:
    mask = (np.abs(px.astype(int) - colour).max(axis=-1) < 10)
    return int(mask.sum(axis=0).max())


def test_size_bucket_bars_are_as_tall_as_the_numbers(tmp_path):
    m = {"pin": {"miou": 0.4, "miou_s": None, "miou_m": 0.2, "miou_l": 0.6},
         "random": {"miou": 0.1, "miou_std": 0.01, "miou_s": 0.0, "miou_m": 0.05, "miou_l": 0.2}}
    size_bucket_bars(m, tmp_path / "bars.png", title="coco")
    with Image.open(tmp_path / "bars.png") as im:
        assert im.format == "PNG" and im.size == (700, 360)
        px = np.asarray(im.convert("RGB"))
    pin_h, random_h = tallest_bar(px, C0), tallest_bar(px, C1)
    assert pin_h > 50 and random_h > 10  # both methods' bars are drawn
    assert 2.4 < pin_h / random_h < 3.6  # 0.6 vs 0.2 on the same axis
    m["pin"]["miou_l"] = 0.3
    size_bucket_bars(m, tmp_path / "bars2.png")
    with Image.open(tmp_path / "bars2.png") as im:
        assert tallest_bar(np.asarray(im.convert("RGB")), C0) < 0.8 * pin_h
