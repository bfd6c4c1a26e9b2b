"""Pictures: the Figure 9 similarity map, training curves, and the stage summary line."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

from pin.errors import PinError  # noqa: E402
from pin.insert import InsertConfig, PositionalInsert, sinusoid_table  # noqa: E402
from pin.stage import describe_outputs, human_size, run_stage, stage_outputs  # noqa: E402
from pin.viz import similarity as sim  # noqa: E402
from pin.viz.curves import read_live, training_curves  # noqa: E402
from pin.vlm.base import InsertSite  # noqa: E402


def test_cosine_matrix_and_mosaic_layout():
    m = sim.cosine_matrix(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [0.0, 0.0]]))
    assert m[0, 0] == pytest.approx(1) and m[0, 1] == pytest.approx(0) and m[0, 2] == pytest.approx(-1)
    assert m[3, 3] == 0  # a zero vector: similarity 0, not nan
    g = 4
    s = np.arange(g**4, dtype=float).reshape(g * g, g * g)
    full = sim.mosaic(s, g)
    assert full.shape == (g * g + g - 1,) * 2
    # the cell of patch (row 1, column 2) is that patch's row of the matrix, as a g x g map
    y, x = 1 * (g + 1), 2 * (g + 1)
    assert np.array_equal(full[y:y + g, x:x + g], s[1 * g + 2].reshape(g, g))
    assert np.isnan(full[g, 0])  # the gap between cells
    half = sim.mosaic(s, g, stride=2)
    assert half.shape == (2 * g + 1,) * 2 and np.array_equal(half[g + 1:, g + 1:], s[2 * g + 2].reshape(g, g))
    assert sim.stride_for(16) == 2 and sim.stride_for(8) == 1 and sim.stride_for(14) == 2
    with pytest.raises(ValueError):
        sim.mosaic(s[:3], g)


def test_locality_reads_the_papers_observations():
    g = 8
    # the 1D sinusoidal table (PIN's input): similar along the row-major index, i.e. within a row
    raw = sim.locality(sim.table_similarity(sinusoid_table(g * g, 64), g), g)
    assert raw["same_row"] > raw["same_column"]
    # a 2D-local table (what a good pi looks like): neighbours far above everything else
    r, c = np.divmod(np.arange(g * g), g)
    local = np.exp(-((r[:, None] - r[None]) ** 2 + (c[:, None] - c[None]) ** 2) / 1.0)
    loc = sim.locality(local, g)
    assert loc["neighbours"] > 0.3 > loc["other"]
    assert sim.patch_rows(65, 8, True) == slice(1, None)
    with pytest.raises(ValueError, match="patch grid"):
        sim.patch_rows(65, 8, False)


class FakeVLM:
    site = InsertSite(n_positions=17, width=6, grid=4, has_cls=True)

    def preprocess(self, images):
        assert all(im.size == (224, 224) for im in images)
        return torch.stack([torch.tensor(np.asarray(im), dtype=torch.float32).mean() for im in images])

    def patch_features(self, pixels):
        g = torch.Generator().manual_seed(0)
        return torch.randn(len(pixels), 17, 6, generator=g) + pixels[:, None, None] / 255


def test_similarity_figure_with_all_three_panels(tmp_path):
    torch.manual_seed(0)
    insert = PositionalInsert(InsertConfig(n_positions=17, width=6, layers=1, hidden=(8,), has_cls=True))
    images = [Image.new("RGB", (30 + i, 20), (10 * i, 0, 0)) for i in range(7)]
    stats = sim.write_similarity(insert, tmp_path / "fig9.png", FakeVLM(), images, n_images=5)
    assert set(stats) == {"table", "encoder", "pi"}
    assert all(set(v) == {"neighbours", "same_row", "same_column", "other"} for v in stats.values())
    w, h = Image.open(tmp_path / "fig9.png").size
    assert w > 3 * h / 2  # three panels side by side
    panels, grid = sim.insert_panels(insert)
    assert grid == 4 and list(panels) == ["table", "pi"]
    with pytest.raises(ValueError, match="at least one image"):
        sim.encoder_similarity(FakeVLM(), [])


def _live(tmp_path):
    root = tmp_path / "plots" / "metrics" / "train"
    root.mkdir(parents=True)
    (root / "loss.tsv").write_text("step\tloss\n10\t2.5\n20\t2.0\n30\t1.5\n")
    (root / "loss_ema.tsv").write_text("step\tloss_ema\n10\t2.6\n20\t2.3\n30\t2.0\n")
    (root / "lr.tsv").write_text("step\tlr\n10\t0.001\n20\t0.001\n30\t0.001\n")
    (root / "samples_per_s.tsv").write_text("step\tsamples_per_s\n10\t100\n20\t110\n30\t120\n")
    return tmp_path / "plots" / "metrics"


def test_training_curves_png(tmp_path):
    live = _live(tmp_path)
    assert read_live(live)["train/loss"] == ([10.0, 20.0, 30.0], [2.5, 2.0, 1.5])
    said = training_curves(live, tmp_path / "curves.png")
    assert "train/loss 2.500 -> 1.500 over 30 steps" in said
    assert Image.open(tmp_path / "curves.png").size == (900, 340)
    with pytest.raises(PinError, match="no dvclive"):
        training_curves(tmp_path / "empty", tmp_path / "x.png")
    (live / "train" / "bad.tsv").write_text("x\ty\n")
    with pytest.raises(PinError, match="not a dvclive TSV"):
        read_live(live)


DVC_YAML = """
stages:
  train:
    cmd: python stages/train.py
    outs: [models/pin]
    metrics:
      - metrics/train.json: {cache: false}
    plots:
      - metrics/plots/curves.png: {cache: false}
  evaluate:
    matrix:
      dataset: [synthetic, coco]
    cmd: python stages/evaluate.py ${item.dataset}
    outs:
      - data/predictions/${item.dataset}.parquet
    metrics:
      - metrics/eval/${item.dataset}.json: {cache: false}
"""


def test_summary_line_names_the_outputs_from_dvc_yaml(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    assert stage_outputs("train") == ["models/pin", "metrics/train.json", "metrics/plots/curves.png"]
    assert stage_outputs("evaluate@coco") == ["data/predictions/coco.parquet", "metrics/eval/coco.json"]
    assert stage_outputs("nope") == [] and stage_outputs("train", tmp_path / "missing.yaml") == []
    (tmp_path / "models" / "pin").mkdir(parents=True)
    (tmp_path / "models" / "pin" / "model.safetensors").write_bytes(b"x" * 3000)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "train.json").write_text("{}")
    assert describe_outputs(stage_outputs("train")) == "models/pin (1 files, 2.9 KiB), metrics/train.json (2 B)"
    run_stage("train", lambda: "600 steps, loss 2.0")
    line = capsys.readouterr().out.strip()
    assert line.startswith("[train] done in ") and line.endswith(
        ": 600 steps, loss 2.0 -> models/pin (1 files, 2.9 KiB), metrics/train.json (2 B)")
    assert human_size(5 * 1024**2) == "5.0 MiB" and human_size(300 * 1024**3) == "300 GiB"
