"""The evaluate stage's pictures: a gallery of answers and mIoU by size bucket."""
from __future__ import annotations

import numpy as np
from PIL import Image

from pin.eval.datasets import Query
from pin.eval.gallery import gallery, gallery_size, pick, size_bucket_bars


def queries(tmp_path, n):
    path = tmp_path / "im.jpg"
    Image.new("RGB", (320, 200), (40, 90, 160)).save(path)
    return [Query("coco", str(i), i, path, (320, 200), f"object number {i} with a long referring "
                  "expression that has to wrap", "cat", 1, (10.0, 20.0, 200.0, 150.0), i) for i in range(n)]


def test_gallery_png(tmp_path):
    qs = queries(tmp_path, 20)
    preds = [None if i % 3 == 0 else (20, 20, 120, 200) for i in range(20)]
    drawn = gallery(qs, preds, tmp_path / "out" / "gallery.png", n=16)
    assert len(drawn) == 16 and drawn[0] == 0 and drawn[-1] == 19
    with Image.open(tmp_path / "out" / "gallery.png") as im:
        assert im.format == "PNG" and im.size == gallery_size(16)
        px = np.asarray(im.convert("RGB"))
    assert im.size == (4 * 228 + 4, 4 * (224 + 40 + 4) + 4)
    assert ((px[..., 1] > 150) & (px[..., 0] < 60)).any()  # green ground truth
    assert ((px[..., 0] > 200) & (px[..., 1] < 40)).any()  # red prediction / "unparsable"


def test_gallery_few(tmp_path):
    qs = queries(tmp_path, 3)
    gallery(qs, [None, (0, 0, 300, 300), (np.nan,) * 4], tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as im:
        assert im.size == gallery_size(3) == (3 * 228 + 4, 224 + 40 + 8)
    assert pick(3, 16) == [0, 1, 2]


def test_size_bucket_bars(tmp_path):
    m = {"pin": {"miou": 0.4, "miou_s": None, "miou_m": 0.2, "miou_l": 0.6},
         "random": {"miou": 0.1, "miou_std": 0.01, "miou_s": 0.0, "miou_m": 0.05, "miou_l": 0.2}}
    size_bucket_bars(m, tmp_path / "bars.png", title="coco")
    with Image.open(tmp_path / "bars.png") as im:
        assert im.format == "PNG" and im.size == (700, 360)
