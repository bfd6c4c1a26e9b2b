"""Filter stage: mask checks, corrupt files, class cut, metrics, and the CLIP scorer (tiny model)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pin.errors import PinError
from pin.params import FilterParams
from pin.synth.filter import CLIP_NOT_APPLIED, REASONS, run_filter, write_manifest, write_object_fixture

CATS = {"apple": "train", "banana": "train", "hot_dog": "train", "cup": "heldout"}


@pytest.fixture
def objects(tmp_path) -> Path:
    root = tmp_path / "objects"
    write_object_fixture(root, CATS, per_category=5, canvas=32, seed=3)
    _set_area(root, {})  # every mask check passes unless a test says otherwise
    return root


def _run(objects: Path, tmp_path: Path, scorer=None, **kw) -> tuple[pd.DataFrame, dict]:
    p = FilterParams(**{"min_per_class": 3, "min_area": 0.05, "max_area": 0.95, **kw})
    metrics = run_filter(p, objects, tmp_path / "filtered", tmp_path / "metrics/filter.json",
                         scorer=scorer, progress=False)
    assert json.loads((tmp_path / "metrics/filter.json").read_text()) == metrics
    return pd.read_parquet(tmp_path / "filtered/manifest.parquet"), metrics


def _set_area(objects: Path, values: dict[tuple[str, int], float]) -> None:
    df = pd.read_parquet(objects / "manifest.parquet")
    df["mask_area_frac"] = 0.5
    for (cat, idx), v in values.items():
        df.loc[(df["category"] == cat) & (df["index"] == idx), "mask_area_frac"] = v
    write_manifest(df, objects / "manifest.parquet")


def test_mask_checks_corrupt_files_and_class_cut(objects, tmp_path):
    _set_area(objects, {("apple", 0): 0.01, ("apple", 1): 0.99, ("banana", 0): 0.01,
                        ("banana", 1): 0.02, ("banana", 2): float("nan")})
    # apple/2 unreadable; cup/0 a valid PNG with nothing visible -> both "corrupt", not silent
    (objects / "images/apple/2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(objects / "images/cup/0.png")

    out, m = _run(objects, tmp_path)
    inp = pd.read_parquet(objects / "manifest.parquet")
    assert list(out.columns) == list(inp.columns) + ["kept", "reason", "clip_score"]
    pd.testing.assert_frame_equal(out[inp.columns], inp)  # the input rows, unchanged, same order
    reason = {(r.category, r.index): r.reason for r in out.itertuples()}
    assert reason[("apple", 0)] == "area_small" and reason[("apple", 1)] == "area_large"
    assert reason[("apple", 2)] == "corrupt" and reason[("cup", 0)] == "corrupt"
    # banana: 2 survivors < min_per_class=3 -> whole class dropped; apple keeps exactly 2 -> dropped too
    assert reason[("banana", 3)] == reason[("banana", 4)] == "class_too_small"
    assert reason[("apple", 3)] == "class_too_small"
    assert out.loc[out["category"] == "hot_dog", "kept"].all()
    assert out["kept"].tolist() == (out["reason"] == "").tolist()
    assert out["clip_score"].isna().all()
    assert pd.read_parquet(tmp_path / "filtered/manifest.parquet")["kept"].dtype == bool

    assert m["input"] == 20 and m["kept"] == 9  # hot_dog 5 + cup 4
    assert reason[("banana", 2)] == "area_small"  # a missing area fails the check
    assert m["dropped"] == {"corrupt": 2, "area_small": 4, "area_large": 1, "clip": 0,
                            "class_too_small": 4}
    assert set(m["dropped"]) == set(REASONS)
    assert m["classes"]["in"] == 4 and m["classes"]["kept"] == 2
    assert m["classes"]["dropped_names"] == {"names": ["apple", "banana"], "truncated": False}
    assert m["splits"] == {"heldout": {"input": 5, "kept": 4, "classes_in": 1, "classes_kept": 1},
                           "train": {"input": 15, "kept": 5, "classes_in": 3, "classes_kept": 1}}
    assert m["clip"] == CLIP_NOT_APPLIED
    assert len(m["corrupt_examples"]) == 2


def test_too_many_corrupt_files_stop_the_stage(objects, tmp_path):
    for i in range(3):
        (objects / f"images/apple/{i}.png").write_bytes(b"garbage")
    with pytest.raises(PinError, match="3/20 object PNGs"):
        _run(objects, tmp_path)
    assert not (tmp_path / "filtered/manifest.parquet").exists()


def test_bad_manifests(tmp_path):
    with pytest.raises(PinError, match="generate stage"):
        run_filter(FilterParams(), tmp_path / "nothing", tmp_path / "f", tmp_path / "m.json", progress=False)
    (tmp_path / "o").mkdir()
    write_manifest(pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                                 [("category", str), ("split", str), ("index", int), ("path", str),
                                  ("mask_area_frac", float)]}), tmp_path / "o/manifest.parquet")
    with pytest.raises(PinError, match="empty"):
        run_filter(FilterParams(), tmp_path / "o", tmp_path / "f", tmp_path / "m.json", progress=False)
    write_manifest(pd.DataFrame({"category": ["a"]}), tmp_path / "o/manifest.parquet")
    with pytest.raises(PinError, match="missing columns"):
        run_filter(FilterParams(), tmp_path / "o", tmp_path / "f", tmp_path / "m.json", progress=False)


def test_nothing_survives_is_an_error(objects, tmp_path):
    with pytest.raises(PinError, match="no object survived"):
        _run(objects, tmp_path, min_per_class=6)
    assert json.loads((tmp_path / "metrics/filter.json").read_text())["kept"] == 0


# ---------------------------------------------------------------------------------------------
# CLIP scoring through a tiny random-weight open_clip model (no hub)
# ---------------------------------------------------------------------------------------------

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip
    import torch

    torch.set_num_threads(1)
    cfg = tmp_path_factory.mktemp("clipcfg") / "pin-tiny-clip.json"
    cfg.write_text(json.dumps(TINY))
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("pin-tiny-clip", pretrained=None)
    return model, preprocess, open_clip.get_tokenizer("pin-tiny-clip")


def test_clip_scorer_and_xpaste_rule(objects, tmp_path, tiny_clip):
    from pin.synth.clip_score import ClipScorer, on_white

    scorer = ClipScorer(*tiny_clip, batch_size=4)
    im = Image.new("RGBA", (10, 6), (0, 0, 255, 0))
    assert on_white(im).getpixel((0, 0)) == (255, 255, 255)
    s1 = scorer.score([im, im.copy()], ["cup", "cup"])
    assert s1.shape == (2,) and np.all(np.abs(s1) <= 100) and s1[0] == pytest.approx(s1[1], abs=1e-4)

    # X-Paste rule: keep if score >= min(min_clip, best_of_class - tolerance); with a high
    # min_clip and no tolerance only the best object of each class survives
    out, m = _run(objects, tmp_path, scorer=scorer, backend="open_clip", min_per_class=1,
                  min_clip=100.0, tolerance=0.0)
    assert m["clip"].startswith("applied") and m["clip_stats"]["scored"] == 20
    assert out["clip_score"].notna().all()
    scores = out["clip_score"].to_numpy()
    best = out.groupby("category")["clip_score"].transform("max").to_numpy()
    expect = scores >= np.minimum(100.0, best - 0.0)
    assert out["kept"].tolist() == expect.tolist() == (scores >= best).tolist()
    assert m["dropped"]["clip"] == 20 - len(CATS) == int((out["reason"] == "clip").sum())

    # the same scores recomputed directly (batched, order-independent)
    direct = scorer.score([Image.open(objects / p) for p in out["path"]],
                          [c.replace("_", " ") for c in out["category"]])
    np.testing.assert_allclose(direct, scores, atol=1e-3)

    # a low min_clip keeps everything (min(min_clip, .) is the threshold)
    _, m2 = _run(objects, tmp_path, scorer=scorer, backend="open_clip", min_per_class=1,
                 min_clip=-100.0, tolerance=0.0)
    assert m2["kept"] == 20
    # a tolerance in between: the best of each class and those close to it survive
    out3, m3 = _run(objects, tmp_path, scorer=scorer, backend="open_clip", min_per_class=1,
                    min_clip=100.0, tolerance=float(np.ptp(scores)) / 4)
    assert m3["dropped"]["clip"] == int((out3["reason"] == "clip").sum()) > 0
    assert len(CATS) <= m3["kept"] < 20


def test_missing_clip_weights_are_a_pin_error(tiny_clip, tmp_path):
    from pin.synth.clip_score import ClipScorer

    with pytest.raises(PinError) as err:
        ClipScorer.from_pretrained("pin-tiny-clip", str(tmp_path / "no-such-weights.bin"), device="cpu")
    msg = str(err.value)
    assert "pin-tiny-clip" in msg and "no-such-weights.bin" in msg and "filter.pretrained" in msg


def test_stage_entry_point(objects, tmp_path, monkeypatch, capsys):
    """stages/filter.py reads params.yaml and writes the DVC outputs in the working directory."""
    import runpy
    import shutil

    import yaml

    shutil.copytree(objects, tmp_path / "work/data/objects")
    (tmp_path / "work/params.yaml").write_text(yaml.safe_dump({"filter": {"min_per_class": 2}}))
    monkeypatch.chdir(tmp_path / "work")
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "stages/filter.py"), run_name="__main__")
    assert "kept 20/20 objects, 4/4 classes; dropped none; CLIP not applied" in capsys.readouterr().out
    assert pd.read_parquet("data/filtered/manifest.parquet")["kept"].all()
    assert json.loads(Path("metrics/filter.json").read_text())["kept"] == 20
    assert not list(Path("data").rglob("*.tmp"))
