"""The evaluate stage's runner (pin.eval.run.run_evaluate) on tiny inputs written in the real
formats: a COCO-format held-out set, a composed training shard, and a stand-in VLM that reads the
one bright rectangle of each image. It answers that rectangle only when given a method's
conditioning, so the rows say whether the runner wired each method up as it claims."""
from __future__ import annotations

import io
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

from pin.boxes import BoxCodec  # noqa: E402
from pin.errors import PinError  # noqa: E402
from pin.eval.run import run_evaluate  # noqa: E402
from pin.insert import InsertConfig, PositionalInsert  # noqa: E402
from pin.methods.pin_method import PinMethod  # noqa: E402
from pin.methods.untrained import RawVLM  # noqa: E402
from pin.params import parse_section  # noqa: E402
from pin.viz.gallery import gallery_size  # noqa: E402

GRID = 8
CODEC = BoxCodec(GRID)
SIZE = (448, 336)  # W, H: squashed to 224 x 224 the frame halves x and shrinks y by 2/3
# object boxes in original pixels, on grid lines of the 224 frame (cells of 28: 56 px in x, 42 in y)
BOXES = [(56, 42, 224, 168), (224, 126, 392, 294), (0, 0, 112, 84), (280, 42, 448, 336)]
RAW_ANSWER = " [0,0,28,28]"


class BoxReader:
    """A stand-in FrozenVLM: its 'features' are the box of bright pixels in the 224 frame."""

    device = torch.device("cpu")
    supports_interleaved_images = False
    input_size = 224

    def preprocess(self, images):
        return torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32)[..., 0]) for im in images])

    def patch_features(self, pixels):
        out = []
        for p in pixels:
            ys, xs = torch.nonzero(p > 128, as_tuple=True)
            out.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        return torch.tensor(out, dtype=torch.float32)[:, None, :]

    def prompt(self, text):
        return f"find {text}"

    def vocabulary_warning(self, texts):
        return None

    def generate(self, feats, prompts, max_new_tokens, num_beams=1, insert=None, **extra):
        assert len(feats) == len(prompts) and max_new_tokens >= len(RAW_ANSWER)
        if insert is None:  # the raw VLM cannot read the box
            return [RAW_ANSWER] * len(prompts)
        return [CODEC.encode(CODEC.to_grid(f[0].tolist())) for f in feats]


def _picture(box) -> Image.Image:
    im = Image.new("RGB", SIZE, "black")
    im.paste((255, 255, 255), tuple(int(v) for v in box))
    return im


def _write_inputs(tmp_path):
    """The held-out set (COCO format) and a training shard (for the random / constant rows)."""
    held = tmp_path / "composed" / "heldout"
    (held / "images").mkdir(parents=True)
    images, anns = [], []
    for i, box in enumerate(BOXES, start=1):
        _picture(box).save(held / "images" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": SIZE[0], "height": SIZE[1]})
        x1, y1, x2, y2 = box
        anns.append({"id": 10 + i, "image_id": i, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                     "iscrowd": 0, "referral": "left dog" if i == 1 else "dog"})
    (held / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "dog"}]}))
    train = tmp_path / "composed" / "train"
    train.mkdir(parents=True)
    rows = []
    for i, box in enumerate(BOXES * 2):
        buf = io.BytesIO()
        _picture(box).save(buf, format="PNG")
        obj = {"category": "dog", "box": list(box), "grid_box": [0, 0, 1, 1], "referral": "dog"}
        rows.append({"image_id": i, "image": buf.getvalue(), "width": SIZE[0], "height": SIZE[1], "objects": [obj]})
    pq.write_table(pa.Table.from_pylist(rows), train / "part-00000.parquet")
    return parse_section("eval", {"paths": {"synthetic": {"annotations": str(held / "annotations.json"),
                                                          "images": str(held / "images")}},
                                  "batch_size": 3, "random_draws": 3, "gallery_size": 4})


def _pin():
    torch.manual_seed(0)
    return PinMethod(PositionalInsert(InsertConfig(n_positions=2, width=4, layers=0)))


def _run(tmp_path, method):
    eval_p = _write_inputs(tmp_path)
    out = {k: str(tmp_path / k) for k in ("metrics_dir", "plots_dir", "predictions_dir")}
    said = run_evaluate("synthetic", eval_p, BoxReader(), method, GRID,
                        composed_dir=str(tmp_path / "composed"), **out)
    metrics = json.loads((tmp_path / "metrics_dir" / "synthetic.json").read_text())
    preds = pd.read_parquet(tmp_path / "predictions_dir" / "synthetic.parquet")
    return said, metrics, preds


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_trained_method_rows_and_files(tmp_path):
    said, metrics, preds = _run(tmp_path, _pin())
    assert set(metrics) == {"pin", "raw", "pin_shuffled", "random", "constant", "dataset"}
    assert metrics["pin"]["miou"] == 1.0 and metrics["pin"]["parse_rate"] == 1.0  # it read every image
    gt = [(x1 / 2, y1 * 2 / 3, x2 / 2, y2 * 2 / 3) for x1, y1, x2, y2 in BOXES]
    raw = np.mean([_iou((0, 0, 28, 28), g) for g in gt])
    assert metrics["raw"]["miou"] == pytest.approx(raw, abs=1e-4)  # no conditioning: the fixed answer
    assert metrics["raw"]["distinct_boxes"] == 1
    assert metrics["pin_shuffled"]["miou"] < 0.5  # answering about another image
    assert metrics["random"]["draws"] == 3 and "miou_std" in metrics["random"]
    assert metrics["constant"]["distinct_boxes"] == 1
    assert metrics["pin"]["iou_own_multi"] is None  # no image with two objects
    assert metrics["dataset"]["n_queries"] == 4 and metrics["dataset"]["n_unreadable_images"] == 0
    assert "pin 1.000" in said and said.startswith("4 queries on 4 images")

    assert len(preds) == 4 * 5 and set(preds["method"]) == set(metrics) - {"dataset"}
    mine = preds[preds["method"] == "pin"].sort_values("query_id")
    assert [tuple(b) for b in mine["gt_box_orig"]] == [tuple(map(float, b)) for b in BOXES]
    assert [tuple(b) for b in mine["pred_box"]] == [tuple(b) for b in mine["gt_box"]]
    assert list(mine["text"]) == ["left dog", "dog", "dog", "dog"]  # the referral is the query
    assert set(preds.loc[preds["method"] == "raw", "answer"]) == {RAW_ANSWER}
    for m in ("pin", "raw", "pin_shuffled"):  # the JSON's mIoU is the mean of the table's IoUs
        assert preds.loc[preds["method"] == m, "iou"].mean() == pytest.approx(metrics[m]["miou"], abs=1e-4)

    with Image.open(tmp_path / "plots_dir" / "synthetic_gallery.png") as im:
        assert im.size == gallery_size(4)
    assert (tmp_path / "plots_dir" / "synthetic_miou_by_size.png").stat().st_size > 0


def test_untrained_method_gets_no_trained_rows(tmp_path):
    _, metrics, preds = _run(tmp_path, RawVLM())
    assert set(metrics) == {"raw", "random", "constant", "dataset"}
    assert len(preds) == 4 * 3


def test_unreadable_images_are_skipped_within_max_missing(tmp_path):
    eval_p = _write_inputs(tmp_path)
    (tmp_path / "composed" / "heldout" / "images" / "2.png").write_bytes(b"not a png")
    dirs = {"composed_dir": str(tmp_path / "composed"), "metrics_dir": str(tmp_path / "m"),
            "plots_dir": str(tmp_path / "p"), "predictions_dir": str(tmp_path / "d")}
    with pytest.raises(PinError, match=r"2\.png: 1 of 4 synthetic images cannot be decoded"):
        run_evaluate("synthetic", eval_p, BoxReader(), _pin(), GRID, **dirs)
    eval_p = SimpleNamespace(**{**eval_p.__dict__, "max_missing": 0.5})
    run_evaluate("synthetic", eval_p, BoxReader(), _pin(), GRID, **dirs)
    stats = json.loads((tmp_path / "m" / "synthetic.json").read_text())["dataset"]
    assert stats["n_unreadable_images"] == 1 and stats["n_queries"] == 3
