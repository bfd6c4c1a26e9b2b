"""Composition function C (property tests) and the compose stage (shards, COCO, determinism, resume)."""
from __future__ import annotations

import io
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from pin.errors import PinError
from pin.params import ComposeParams
from pin.synth import shards as sh
from pin.categories import query_name
from pin.synth.compose import image_seed, run_compose, worker_args
from pin.synth.layout import (
    covered_fraction, layout, occlusion, referrals, render, sample_count, snap_size, to_pixels,
)
from pin.synth.filter import write_manifest, write_object_fixture

EPS = 1e-9


def _decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


# ---------------------------------------------------------------------------------------------
# Property tests of C
# ---------------------------------------------------------------------------------------------

@st.composite
def compose_params(draw) -> ComposeParams:
    grid = draw(st.integers(1, 16))
    cell = draw(st.integers(max(1, math.ceil(16 / grid)), max(16, 8)))
    a_max = draw(st.integers(1, 4))
    s_min, s_max = [], []
    for _ in range(a_max):
        # a range that contains at least one multiple of 1/grid (ComposeParams' requirement)
        L = draw(st.integers(1, grid))
        lo = max(1e-3, (L - draw(st.floats(0, 0.99))) / grid)
        hi = min(1.0, (L + draw(st.floats(0, 0.99))) / grid)
        s_min.append(lo)
        s_max.append(hi)
    o_max = draw(st.sampled_from([0.0, 0.25, 0.5, 1.0]) | st.floats(0, 1))
    return ComposeParams(image_size=grid * cell, grid=grid, a_max=a_max, s_min=s_min, s_max=s_max,
                         o_max=o_max)


aspect = st.floats(-2.5, 2.5).map(lambda x: float(math.exp(x)))  # w/h from ~1:12 to ~12:1


@settings(max_examples=150, deadline=None)
@given(p=compose_params(), aspects=st.lists(aspect, min_size=4, max_size=4), seed=st.integers(0, 2**32))
def test_layout_respects_all_constraints(p, aspects, seed):
    rng = np.random.default_rng(seed)
    n = sample_count(rng, p)
    assert 1 <= n <= p.a_max
    boxes = layout(rng, aspects[:n], p)
    a = len(boxes)
    assert 1 <= a <= n  # a = 1 always fits
    G, cell = p.grid, p.image_size // p.grid
    for box, ar in zip(boxes, aspects):
        i1, j1, i2, j2 = box
        assert 0 <= i1 < i2 <= G and 0 <= j1 < j2 <= G  # inside the image
        w, h = i2 - i1, j2 - j1
        long_cells = max(w, h)
        # size bounds of the final object count, on the longer side
        assert p.s_min[a - 1] - EPS <= long_cells / G <= p.s_max[a - 1] + EPS
        # aspect ratio kept up to quantisation: the short side is the nearest whole cell (>= 1)
        exact_short = long_cells / ar if ar >= 1 else long_cells * ar
        short = h if ar >= 1 else w
        assert short == max(1, math.floor(exact_short + 0.5))
        assert abs(short - exact_short) <= 0.5 + EPS or short == 1
        assert (w, h) == snap_size(ar, long_cells)
        # pixel box on grid lines
        px = to_pixels(box, p)
        assert all(v % cell == 0 for v in px)
        assert 0 <= px[0] < px[2] <= p.image_size and 0 <= px[1] < px[3] <= p.image_size
    assert max(occlusion(boxes)) <= p.o_max + EPS


def _tight_object(w: int, h: int, shape: str) -> Image.Image:
    im = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    if shape == "ellipse":
        d.ellipse((0, 0, w - 1, h - 1), fill=(255, 255, 255, 255))
    else:
        d.rectangle((0, 0, w - 1, h - 1), fill=(255, 255, 255, 255))
    return im.crop(im.getchannel("A").getbbox())  # tightly cropped, like the generate stage


@settings(max_examples=60, deadline=None)
@given(p=compose_params(), w=st.integers(3, 90), h=st.integers(3, 90),
       shape=st.sampled_from(["ellipse", "rect"]), seed=st.integers(0, 2**32))
def test_pasted_alpha_extent_equals_box(p, w, h, shape, seed):
    """Each object rendered alone on an empty canvas covers exactly its (grid-snapped) box."""
    rng = np.random.default_rng(seed)
    obj = _tight_object(w, h, shape)
    boxes = layout(rng, [obj.width / obj.height] * p.a_max, p)
    for box in boxes:  # every object's layer separately
        out = np.asarray(render(np.zeros((p.image_size, p.image_size, 3), np.uint8), [obj], [box], p))
        ys, xs = np.nonzero(out.max(axis=2))
        x1, y1, x2, y2 = to_pixels(box, p)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)


def test_occlusion_measure_examples():
    # the new box covers half of the old one; the new one (on top) is not occluded
    assert occlusion([(0, 0, 4, 4), (2, 0, 6, 4)]) == [0.5, 0.0]
    # union, not pairwise: two later boxes each covering half hide the first one completely
    assert occlusion([(0, 0, 4, 4), (0, 0, 2, 4), (2, 0, 4, 4)]) == [1.0, 0.0, 0.0]
    # a small object on a large one: the large one is occluded by 1/16, the small one not at all
    assert occlusion([(0, 0, 8, 8), (2, 2, 4, 4)]) == [4 / 64, 0.0]
    # touching edges do not overlap
    assert covered_fraction((0, 0, 2, 2), [(2, 0, 4, 2)]) == 0.0


def test_o_max_zero_means_disjoint_boxes():
    p = ComposeParams(image_size=64, grid=8, a_max=3, s_min=[0.2, 0.2, 0.2], s_max=[0.5, 0.5, 0.5],
                      o_max=0.0)
    for seed in range(30):
        boxes = layout(np.random.default_rng(seed), [1.0, 2.0, 0.5], p)
        for k, b in enumerate(boxes):
            assert covered_fraction(b, boxes[:k] + boxes[k + 1:]) == 0.0


def test_a_is_reduced_when_objects_cannot_fit():
    # three objects of at least 3/4 of the image side cannot avoid overlapping with o_max=0
    p = ComposeParams(image_size=64, grid=4, a_max=3, s_min=[0.75] * 3, s_max=[1.0] * 3, o_max=0.0)
    boxes = layout(np.random.default_rng(0), [1.0, 1.0, 1.0], p)
    assert len(boxes) == 1 and max(boxes[0][2] - boxes[0][0], boxes[0][3] - boxes[0][1]) >= 3


def test_size_bounds_without_a_whole_cell_are_refused_by_the_params():
    from pin.params import ParamsError, parse_section

    # s_min[1] .. s_max[1] = 0.1 .. 0.2 of a 4-cell side holds no whole cell (0.4 .. 0.8)
    with pytest.raises(ParamsError, match=r"compose\.s_min\[1\]: compose\.s_min\[1\]=0\.1 \.\. "
                                          r"compose\.s_max\[1\]=0\.2 contains no multiple of 1/grid"):
        parse_section("compose", {"image_size": 64, "grid": 4, "a_max": 2, "s_min": [0.3, 0.1],
                                  "s_max": [1.0, 0.2]})
    ok = ComposeParams(image_size=64, grid=4, a_max=2, s_min=[0.3, 0.2], s_max=[1.0, 0.3])
    assert ok.long_side_cells(1) == (2, 4) and ok.long_side_cells(2) == (1, 1)


def test_referrals():
    boxes_h = [[0, 0, 10, 10], [50, 5, 60, 15]]
    assert referrals(["dog", "dog"], boxes_h) == ["left dog", "right dog"]
    boxes_v = [[0, 40, 10, 50], [5, 0, 15, 10]]
    assert referrals(["dog", "dog"], boxes_v) == ["bottom dog", "top dog"]
    assert referrals(["dog", "cat"], boxes_h) == ["dog", "cat"]
    assert referrals(["hot_dog", "hot_dog"], boxes_h) == ["left hot dog", "right hot dog"]
    # three on a diagonal: the middle one is extreme in no direction -> bare name
    diag = [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]
    refs = referrals(["cup"] * 3, diag)
    assert refs[1] == "cup" and refs[0] in ("left cup", "top cup") and refs[2] in ("right cup", "bottom cup")
    # the largest centre difference picks the axis
    assert referrals(["a", "a"], [[0, 0, 10, 10], [12, 40, 22, 50]]) == ["top a", "bottom a"]


def test_image_seed_depends_on_split_and_index_only():
    assert image_seed(0, "train", 5) == image_seed(0, "train", 5)
    assert len({image_seed(0, s, i) for s in ("train", "val", "heldout") for i in range(50)}) == 150
    assert image_seed(1, "train", 5) != image_seed(0, "train", 5)
    assert 0 <= image_seed(-3, "val", 2**40) < 2**63


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------

CATEGORIES = {"red_ball": "train", "box": "train", "cone": "train", "cup": "heldout", "dog": "heldout"}


@pytest.fixture(scope="module")
def objects(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("objects")
    df = write_object_fixture(root / "objects", CATEGORIES, per_category=3, canvas=32, seed=1)
    df["kept"] = True
    df["reason"] = ""
    df["clip_score"] = np.nan
    write_manifest(df, root / "filtered" / "manifest.parquet")
    return root / "objects", root / "filtered" / "manifest.parquet"


def small(**kw) -> ComposeParams:
    base = dict(image_size=64, grid=8, n_train=9, n_val=3, n_heldout=5, n_pretrain=0, shard_size=4, workers=1,
                backgrounds="builtin")
    return ComposeParams(**{**base, **kw})


def _compose(objects, out: Path, p: ComposeParams) -> dict:
    return run_compose(p, objects[0], objects[1], out, out.parent / f"{out.name}.metrics.json",
                       progress=False)


def _shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("part-*.parquet"))}


def test_stage_outputs_records_metrics_and_coco(objects, tmp_path):
    p = small(referrals=True, same_type_prob=1.0)
    out = tmp_path / "composed"
    result = _compose(objects, out, p)
    assert result["run"] == {"shards_written": 3 + 1 + 2, "shards_reused": 0}
    cell = p.image_size // p.grid
    for split, n, cats in (("train", 9, {"red_ball", "box", "cone"}), ("val", 3, None),
                           ("heldout", 5, {"cup", "dog"})):
        names = [q.name for q in sh.list_shards(out / split)]
        assert names == [sh.shard_name(k) for k in range(math.ceil(n / 4))]
        df = pd.concat([pd.read_parquet(q) for q in sh.list_shards(out / split)], ignore_index=True)
        assert df["image_id"].tolist() == list(range(1, n + 1))
        for _, rec in df.iterrows():
            assert 1 <= len(rec["objects"]) <= p.a_max
            assert (rec["width"], rec["height"], rec["format"]) == (64, 64, "jpeg")
            assert _decode(rec["image"]).size == (64, 64)
            assert rec["background"].split(":")[0] in ("skimage", "texture")
            used = [o["category"] for o in rec["objects"]]
            assert set(used) <= (cats or {"red_ball", "box", "cone"})
            for o in rec["objects"]:
                assert list(o["box"]) == [v * cell for v in o["grid_box"]]
                assert o["source"].startswith("images/")
            if len(used) > 1:  # same_type_prob=1: every object shares the first one's category
                assert len(set(used)) == 1
                assert any({"left", "right", "top", "bottom", "middle"} & set(o["referral"].split())
                           for o in rec["objects"])  # "left dog" or "dog on the left" (App. D)
    metrics = json.loads((tmp_path / "composed.metrics.json").read_text())
    assert metrics["splits"]["train"]["images"] == 9
    assert sum(metrics["splits"]["heldout"]["objects_per_image"].values()) == 5
    assert metrics["splits"]["heldout"]["categories_available"] == 2
    assert metrics["splits"]["train"]["shards"] == 3

    # the heldout COCO export loads in pycocotools and matches the shards
    from pycocotools.coco import COCO

    coco = COCO(str(out / "heldout" / "annotations.json"))
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == ["cup", "dog"]
    recs = {r["image_id"]: r for r in sh.iter_records(out / "heldout")}
    assert sorted(coco.getImgIds()) == sorted(recs)
    for img_id, rec in recs.items():
        info = coco.loadImgs(img_id)[0]
        with Image.open(out / "heldout" / "images" / info["file_name"]) as im:
            assert im.size == (info["width"], info["height"])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        assert len(anns) == len(rec["objects"])
        for ann, ob in zip(sorted(anns, key=lambda a: a["order"]), rec["objects"]):
            x1, y1, x2, y2 = ob["box"]
            assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1]
            assert coco.loadCats(ann["category_id"])[0]["key"] == ob["category"]


def test_deterministic_across_runs_and_worker_counts_and_resume(objects, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _compose(objects, a, small())
    _compose(objects, b, small(workers=2))
    first = _shard_bytes(a)
    assert len(first) == 6 and first == _shard_bytes(b)
    assert (a / "heldout/annotations.json").read_bytes() == (b / "heldout/annotations.json").read_bytes()

    # resume: delete one shard (and leave a stale temp file), rerun -> only it is rebuilt, identical
    (a / "train" / sh.shard_name(1)).unlink()
    (a / "train" / ".part-00001.parquet.999.tmp").write_bytes(b"half a shard")
    result = _compose(objects, a, small())
    assert result["run"] == {"shards_written": 1, "shards_reused": 5}
    assert _shard_bytes(a) == first
    assert not list(a.rglob("*.tmp"))

    # another config starts over (no stale shards mixed in)
    result = _compose(objects, a, small(seed=7))
    assert result["run"]["shards_reused"] == 0
    assert _shard_bytes(a) != first


def test_png_format_and_no_referrals(objects, tmp_path):
    out = tmp_path / "c"
    _compose(objects, out, small(format="png", n_val=0, n_heldout=0, n_train=4))
    for rec in sh.iter_records(out / "train"):
        assert rec["format"] == "png" and rec["image"][:4] == b"\x89PNG"
        cats = [o["category"] for o in rec["objects"]]
        assert len(set(cats)) == len(cats)  # distinct categories when referrals are off
        assert [o["referral"] for o in rec["objects"]] == [query_name(c) for c in cats]
    assert not list((out / "val").glob("part-*")) and json.loads(
        (out / "heldout/annotations.json").read_text())["images"] == []


def test_background_folder(objects, tmp_path):
    bg = tmp_path / "bg"
    (bg / "sub").mkdir(parents=True)
    Image.new("RGB", (80, 50), (10, 200, 30)).save(bg / "sub" / "green.jpg")
    (bg / "broken.png").write_bytes(b"not an image at all")
    out = tmp_path / "c"
    # 1 of 2 files unreadable: over the default compose.max_corrupt, for library callers too
    with pytest.raises(PinError, match=r"1/2 images are unreadable \(> compose\.max_corrupt=0\.1\)"):
        _compose(objects, out, small(backgrounds=str(bg), n_val=0, n_heldout=0, n_train=4))
    result = _compose(objects, out, small(backgrounds=str(bg), n_val=0, n_heldout=0, n_train=4, max_corrupt=0.5))
    assert result["backgrounds"]["images"] == 1 and result["backgrounds"]["skipped_unreadable"] == 1
    assert {r["background"] for r in sh.iter_records(out / "train")} == {"file:sub/green.jpg"}

    with pytest.raises(PinError, match="compose.backgrounds"):
        _compose(objects, tmp_path / "d", small(backgrounds=str(tmp_path / "missing")))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PinError, match="compose.backgrounds"):
        _compose(objects, tmp_path / "d", small(backgrounds=str(empty)))


def test_workers_get_every_param(objects):
    """A pool worker is started with the params themselves: a model_dump() would drop the
    exclude=True fields (max_corrupt) and the worker would run with their defaults."""
    import pickle

    from pin.synth import compose
    from pin.synth.backgrounds import scan_backgrounds

    p = small(max_corrupt=0.5, workers=2)
    pools, _ = compose.load_pools(objects[1])
    args = pickle.loads(pickle.dumps(worker_args(p, objects[0], pools, scan_backgrounds("builtin"))))
    compose._init_worker(*args)
    try:
        assert compose._WORKER is not None and compose._WORKER.p == p and compose._WORKER.p.max_corrupt == 0.5
    finally:
        compose._reset_worker()


def test_white_backgrounds(objects, tmp_path):
    """compose.backgrounds=white (paper Tab. 6 (a)): every pixel outside the pasted objects is white."""
    out = tmp_path / "w"
    result = _compose(objects, out, small(backgrounds="white", format="png", n_val=0, n_heldout=0, n_train=4))
    assert result["backgrounds"] == {"kind": "white"}
    for rec in sh.iter_records(out / "train"):
        assert rec["background"] == "white"
        pixels = np.asarray(_decode(rec["image"]).convert("RGB"))
        outside = np.ones(pixels.shape[:2], dtype=bool)
        for o in rec["objects"]:
            x1, y1, x2, y2 = o["box"]
            outside[y1:y2, x1:x2] = False
        assert outside.any() and (pixels[outside] == 255).all()


def test_corrupt_object_png_is_skipped_and_counted(objects, tmp_path):
    objects_dir = tmp_path / "objects"
    shutil.copytree(objects[0], objects_dir)
    df = pd.read_parquet(objects[1])
    bad = df[df["split"] == "train"]["path"].iloc[0]
    (objects_dir / bad).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "c"
    result = run_compose(small(n_train=30, n_val=0, n_heldout=0, shard_size=30), objects_dir, objects[1],
                         out, None, progress=False)
    train = result["splits"]["train"]
    assert train["object_read_failures"] >= 1 and result["unreadable_objects"] == [bad]
    assert all(o["source"] != bad for r in sh.iter_records(out / "train") for o in r["objects"])


def test_bad_filtered_manifest(objects, tmp_path):
    df = pd.read_parquet(objects[1])
    empty = tmp_path / "empty.parquet"
    write_manifest(df.assign(kept=False), empty)
    with pytest.raises(PinError, match="no kept objects"):
        run_compose(small(), objects[0], empty, tmp_path / "c", None, progress=False)
    with pytest.raises(PinError, match="filter stage"):
        run_compose(small(), objects[0], tmp_path / "missing.parquet", tmp_path / "c", None, progress=False)
    only_train = tmp_path / "train_only.parquet"
    write_manifest(df[df["split"] == "train"], only_train)
    with pytest.raises(PinError, match="compose.n_heldout"):
        run_compose(small(), objects[0], only_train, tmp_path / "c", None, progress=False)


def test_stage_entry_point(objects, tmp_path, monkeypatch):
    """stages/compose.py reads params.yaml and writes the DVC outputs in the working directory."""
    import runpy

    import yaml

    (tmp_path / "data").mkdir()
    shutil.copytree(objects[0], tmp_path / "data/objects")
    shutil.copytree(objects[1].parent, tmp_path / "data/filtered")
    params = small(n_train=2, n_val=1, n_heldout=1).model_dump()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"compose": params}))
    monkeypatch.chdir(tmp_path)
    stage = Path(__file__).resolve().parents[1] / "stages" / "compose.py"
    runpy.run_path(str(stage), run_name="__main__")  # run_stage exits only on errors
    assert json.loads(Path("metrics/compose.json").read_text())["images"] == 4
    assert Path("data/composed/heldout/annotations.json").exists()
    assert os.path.exists("data/composed/_config.json")


@pytest.mark.parametrize("broken, error", [
    ("UnpicklableInWorker", r"a compose worker process could not start: unexpected RuntimeError .*"
                            r"\(RuntimeError: this params object cannot be unpickled in a worker\)"),
    ("KillsTheWorker", r"a compose worker process died \(.+\); the 0 shards finished this run are kept under .*: "
                       r"rerun to resume"),
])
def test_a_worker_that_cannot_start_stops_the_stage_within_seconds(objects, tmp_path, broken, error):
    """multiprocessing.Pool respawned such workers forever (the stage hung at 0%); now the stage
    fails at once with the worker's error, keeping the shards already finished."""
    import time

    import broken_worker

    out = tmp_path / "c"
    first = _compose(objects, out, small())  # 6 shards
    (out / "train" / sh.shard_name(1)).unlink()
    (out / "val" / sh.shard_name(0)).unlink()
    kept = _shard_bytes(out)
    p = getattr(broken_worker, broken)(**small(workers=2).model_dump())
    start = time.monotonic()
    with pytest.raises(PinError, match=error):
        _compose(objects, out, p)
    assert time.monotonic() - start < 60  # spawning 2 workers; it hung forever before
    assert _shard_bytes(out) == kept and len(kept) == len(_shard_bytes(out)) == 4
    assert first["run"]["shards_written"] == 6


def test_a_damaged_reused_shard_is_rebuilt(objects, tmp_path, capsys):
    import pyarrow.parquet as pq

    out = tmp_path / "c"
    _compose(objects, out, small())
    want = _shard_bytes(out)
    shard = out / "train" / sh.shard_name(0)
    shard.write_bytes(shard.read_bytes()[:-40])  # truncated: the footer is gone
    other = out / "val" / sh.shard_name(0)
    sh.write_shard(other, pq.read_table(other).to_pylist()[:1])  # readable, one row short
    result = _compose(objects, out, small())
    assert result["run"] == {"shards_written": 2, "shards_reused": 4}
    assert _shard_bytes(out) == want
    log = capsys.readouterr().out
    assert f"rebuilding {shard}: not a readable shard" in log and f"rebuilding {other}: 1 rows, expected 3" in log
