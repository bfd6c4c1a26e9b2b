"""The figures stage (pin.viz.figures.run_figures) and the PNG writer behind every picture: the
same results give the same bytes, and wall-clock series never reach a picture."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

from pin.errors import PinError  # noqa: E402
from pin.insert import InsertConfig, PositionalInsert  # noqa: E402
from pin.methods.pin_method import PinMethod  # noqa: E402
from pin.methods.untrained import RawVLM  # noqa: E402
from pin.viz.curves import training_curves  # noqa: E402
from pin.viz.figures import run_figures  # noqa: E402
from pin.viz.png import figure, png_bytes, save_png  # noqa: E402
from test_viz import FakeVLM  # noqa: E402

PIN_P = SimpleNamespace(layers=1, table="sinusoidal")


def _live(root, loss=(2.5, 2.0, 1.5), samples_per_s=(100, 110, 120)):
    d = root / "plots" / "metrics" / "train"
    d.mkdir(parents=True, exist_ok=True)

    def rows(name, vals):
        return f"step\t{name}\n" + "".join(f"{10 * (i + 1)}\t{v}\n" for i, v in enumerate(vals))

    (d / "loss.tsv").write_text(rows("loss", loss))
    (d / "loss_ema.tsv").write_text(rows("loss_ema", [v + 0.1 for v in loss]))
    (d / "lr.tsv").write_text(rows("lr", (0.001, 0.001, 0.0005)))
    (d / "samples_per_s.tsv").write_text(rows("samples_per_s", samples_per_s))
    return root / "plots" / "metrics"


def test_save_png_same_figure_same_bytes_and_no_version_stamp(tmp_path):
    def draw():
        fig = figure((3, 2))
        fig.add_subplot().plot([0, 1, 2], [1, 0, 1])
        return fig

    a, b = png_bytes(draw()), png_bytes(draw())
    assert a == b
    save_png(draw(), tmp_path / "sub" / "x.png")
    assert (tmp_path / "sub" / "x.png").read_bytes() == a
    with Image.open(tmp_path / "sub" / "x.png") as im:
        assert "Software" not in im.info  # matplotlib's version stamp would change bytes on upgrade
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.png"]  # no temp file left


def test_training_curves_ignore_wall_clock_series(tmp_path):
    first = training_curves(_live(tmp_path / "a"), tmp_path / "a.png")
    training_curves(_live(tmp_path / "b", samples_per_s=(7, 3000, 5)), tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()  # another run's timing
    training_curves(_live(tmp_path / "c", loss=(2.5, 2.0, 1.4)), tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes() != (tmp_path / "a.png").read_bytes()  # results do show
    assert "samples_per_s" not in first and "train/loss 2.500 -> 1.500 over 30 steps" in first


def _pin_method():
    torch.manual_seed(0)
    return PinMethod(PositionalInsert(InsertConfig(n_positions=17, width=6, layers=1, hidden=(8,), has_cls=True)))


def _outputs(tmp_path):
    return {"similarity_png": tmp_path / "sim.png", "similarity_json": tmp_path / "sim.json",
            "curves_png": tmp_path / "curves.png"}


def test_run_figures_for_pin_draws_pi_and_the_curves(tmp_path):
    images = [Image.new("RGB", (30, 20), (10 * i, 0, 0)) for i in range(3)]
    out = _outputs(tmp_path)
    said = run_figures(FakeVLM(), _pin_method(), images, PIN_P, live_dir=_live(tmp_path), **out)
    stats = json.loads(out["similarity_json"].read_text())
    assert set(stats) == {"table", "encoder", "pi"}
    assert "pi " in said and "train/loss 2.500 -> 1.500" in said
    with Image.open(out["curves_png"]) as im:
        assert im.size == (900, 340)
    first = {k: p.read_bytes() for k, p in out.items()}
    run_figures(FakeVLM(), _pin_method(), images, PIN_P, live_dir=_live(tmp_path), **out)
    assert {k: p.read_bytes() for k, p in out.items()} == first  # a rerun changes no byte


def test_run_figures_asks_the_method_whether_it_trained(tmp_path):
    images = [Image.new("RGB", (30, 20), (0, 90, 0))]
    out = _outputs(tmp_path)
    # a stale dvclive log next to a method that trains nothing must not be drawn as its curve
    said = run_figures(FakeVLM(), RawVLM(), images, PIN_P, live_dir=_live(tmp_path), **out)
    assert said.endswith("method raw trained nothing: no curves")
    assert set(json.loads(out["similarity_json"].read_text())) == {"table", "encoder"}  # no learned pi
    with Image.open(out["curves_png"]) as im:
        assert im.size == (600, 200)


def test_run_figures_for_a_trained_method_needs_its_log(tmp_path):
    class Trained(RawVLM):
        name, trains = "vpt_fusion", True

    with pytest.raises(PinError, match="no dvclive"):
        run_figures(FakeVLM(), Trained(), [Image.new("RGB", (8, 8))], PIN_P, live_dir=tmp_path / "none",
                    **_outputs(tmp_path))


def test_figures_stage_entry(tmp_path):
    """stages/figures.py as dvc repro runs it: the trained method from models/pin, its run's log."""
    import shutil

    import yaml
    from stage_runner import run_entry, write_params
    from test_bad_inputs import composed_train, models

    models(tmp_path)
    composed_train(tmp_path)
    shutil.copytree(tmp_path / "data/composed/train", tmp_path / "data/composed/val")
    _live(tmp_path / "metrics" / "train_live")
    write_params(tmp_path)
    code, err, out = run_entry("figures", tmp_path)
    assert code == 0, err
    assert set(json.loads((tmp_path / "metrics/similarity.json").read_text())) == {"table", "encoder", "pi"}
    with Image.open(tmp_path / "metrics/plots/train_curves.png") as im:
        assert im.size == (900, 340)
    raw = yaml.safe_load((tmp_path / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**raw, "method": "raw"}))  # models/pin: still pin
    code, err, _ = run_entry("figures", tmp_path)
    assert code == 1 and "models/pin holds method 'pin' but params say method='raw'" in err[-1]
