"""The procedural shapes backend: classes and split, flat colours, masks, and the generate stage."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pin.params import GenerateParams
from pin.synth.generate import MANIFEST, run_generate
from pin.synth.shapes import COLOURS, HELDOUT, SHAPES, render_shape, shape_categories


def test_classes_and_split():
    cats = shape_categories()
    names = [c.name for c, _ in cats]
    assert len(names) == 24 == len(set(names))
    assert [c.id for c, _ in cats] == list(range(1, 25))
    held = {c.name for c, s in cats if s == "heldout"}
    assert held == HELDOUT and len(held) == 6
    # every shape and every colour is still seen in training; only the pairs are new
    train = [c.name.split() for c, s in cats if s == "train"]
    assert {s for _, s in train} == set(SHAPES) and {c for c, _ in train} == set(COLOURS)
    assert {n.split()[1] for n in held} == set(SHAPES) and {n.split()[0] for n in held} == set(COLOURS)


@pytest.mark.parametrize("shape", SHAPES)
def test_flat_colour_and_mask(shape):
    im = render_shape(shape, "green", seed=3, canvas=64)
    a = np.asarray(im)
    assert im.mode == "RGBA" and im.size == (64, 64)
    alpha = a[..., 3]
    assert set(np.unique(alpha)) == {0, 255}  # hard mask
    inside = a[alpha == 255][:, :3]
    assert (inside == COLOURS["green"]).all()  # every object pixel has exactly the class colour
    ys, xs = np.nonzero(alpha)
    long_side = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1
    assert 0.35 * 64 <= long_side <= 64
    fill = (alpha > 0).sum() / ((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1))
    # the masks are the shapes: an ellipse fills pi/4 of its box, a five-pointed star far less
    if shape == "circle":
        assert fill == pytest.approx(np.pi / 4, abs=0.04)
    elif shape == "star":
        assert fill < 0.5
    others = [s for s in SHAPES if s != shape]
    assert all(not np.array_equal(alpha, np.asarray(render_shape(s, "green", 3, 64))[..., 3]) for s in others)
    assert np.array_equal(a, np.asarray(render_shape(shape, "green", seed=3, canvas=64)))
    assert not np.array_equal(a, np.asarray(render_shape(shape, "green", seed=4, canvas=64)))


def test_generate_stage_with_shapes(tmp_path):
    out = tmp_path / "objects"
    result = run_generate(GenerateParams(backend="shapes", per_category=2, image_size=48), out, progress=False)
    df = pd.read_parquet(out / MANIFEST)
    assert result.categories == {"train": 18, "heldout": 6} and len(df) == 48
    assert set(df.loc[df["split"] == "heldout", "category"]) == HELDOUT
    assert (df["backend"] == "shapes").all() and (df["prompt"] == "shapes:" + df["category"]).all()
    for row in df.itertuples():
        with Image.open(out / row.path) as im:
            a = np.asarray(im.convert("RGBA"))
        colour = COLOURS[row.category.split()[0]]
        assert (a[a[..., 3] > 0][:, :3] == colour).all()
        assert a[..., 3][0].any() and a[..., 3][:, 0].any()  # cropped tight
    again = run_generate(GenerateParams(backend="shapes", per_category=2, image_size=48), tmp_path / "b",
                     progress=False)
    assert again.made == 48
    assert {p.name: p.read_bytes() for p in (tmp_path / "b").rglob("*.png")} == \
        {p.name: p.read_bytes() for p in out.rglob("*.png")}
