"""Fuzzing the inputs a user hands over: the answer parser and the annotation loaders.

Random strings, random JSON / XML / pickle shapes and random bytes: each call either succeeds -
with queries that keep the loaders' promises (a box inside its image with positive area, a
one-line printable query text, a category name) - or raises PinError, whose message names the
file. Any other exception fails. ``PIN_HYPOTHESIS_N=2000`` runs a longer fuzzing session.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pin.boxes import BoxCodec
from pin.errors import PinError
from pin.eval.datasets import load_queries
from pin.eval.query import Query
from pin.params import parse_section

N = int(os.environ.get("PIN_HYPOTHESIS_N", 0))
SHARED_TMP = [HealthCheck.function_scoped_fixture]  # tmp_path is reused across examples on purpose


def fuzz(n: int):
    return settings(max_examples=N or n, deadline=None, suppress_health_check=SHARED_TMP)


# ---------------------------------------------------------------------------------------------
# the answer parser
# ---------------------------------------------------------------------------------------------
NEAR_ANSWER = st.from_regex(
    r"\A\s{0,2}\[?\s?[-+]?[0-9.e]{0,5}(\s?[,;]\s?[-+]?[0-9.eE]{0,5}){0,5}\s?\]?[^\n]{0,4}\Z")


@fuzz(400)
@given(text=st.one_of(NEAR_ANSWER, st.text(max_size=40)), grid=st.sampled_from([8, 14, 16]))
def test_parser_returns_a_valid_box_or_none(text, grid):
    codec = BoxCodec(grid)
    box = codec.parse(text)
    if box is not None:
        x1, y1, x2, y2 = box
        assert all(math.isfinite(v) and 0 <= v <= codec.frame for v in box)
        assert x1 < x2 and y1 < y2
    grid_box = codec.parse_grid(text)
    assert (grid_box is None) == (box is None)
    if grid_box is not None:
        assert codec.check(grid_box) == grid_box


@fuzz(50)
@given(value=st.one_of(st.none(), st.integers(), st.floats(), st.binary(max_size=10),
                       st.lists(st.integers(), max_size=4)))
def test_parser_ignores_non_text(value):
    assert BoxCodec(16).parse(value) is None


# ---------------------------------------------------------------------------------------------
# the loaders
# ---------------------------------------------------------------------------------------------
def check_queries(queries: list) -> None:
    """What every loader promises about a query it returns."""
    for q in queries:
        assert isinstance(q, Query)
        w, h = q.image_size
        x1, y1, x2, y2 = q.gt_box
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, (q.gt_box, q.image_size)
        for text in (q.text, q.category):
            assert text and text == " ".join(text.split()), repr(text)
            assert not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text), repr(text)
            text.encode("utf-8")  # writable to the predictions file


def run_loader(name: str, paths: dict) -> None:
    cfg = parse_section("eval", {"paths": {name: paths}})
    try:
        queries, stats = load_queries(name, cfg)
    except PinError as err:
        assert str(err), "an empty message"
        return
    check_queries(queries)
    assert stats["n_queries"] == len(queries)


def image(path: Path, size=(40, 30)) -> None:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (90, 160, 20)).save(path, format="JPEG")


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 60), st.floats(allow_nan=True),
                    st.text(max_size=6), st.sampled_from(["a.jpg", "dog", "r", "", " _ ", "<image>", "\ud800"]))
KEYS = st.sampled_from(["images", "annotations", "categories", "id", "image_id", "category_id", "bbox",
                        "file_name", "coco_url", "width", "height", "name", "synonyms", "iscrowd",
                        "referral", "frequency", "x"])
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(KEYS, inner, max_size=6)), max_leaves=30)

BOX = st.lists(st.one_of(st.integers(-60, 80), st.floats(-1e3, 1e3), st.just(float("inf"))), min_size=4, max_size=4)
ODD_NAMES = st.sampled_from(["dog", "dining_table", "  tv\nmonitor ", "<image>", "a\x00b", "\ud800x",
                             "\U0001F415\u200d", "{obj}", "x" * 300, "l\u00e9gume"])
NAMES = st.one_of(ODD_NAMES, st.text(max_size=6))
CATEGORY = st.fixed_dictionaries({"name": st.one_of(ODD_NAMES, ODD_NAMES, NAMES)},
                                 optional={"synonyms": st.lists(NAMES, max_size=2)})
NEARLY_COCO = st.fixed_dictionaries({
    "images": st.lists(st.fixed_dictionaries(
        {"id": st.integers(0, 1), "file_name": st.sampled_from(["a.jpg"] * 4 + ["missing.jpg"]),
         "width": st.sampled_from([40] * 8 + [0, 7.5]), "height": st.sampled_from([30] * 8 + [-1])}),
        min_size=1, max_size=3),
    "annotations": st.lists(st.fixed_dictionaries(
        {"id": st.integers(0, 9), "image_id": st.sampled_from([0, 0, 1, 2]), "category_id": st.integers(0, 1),
         "bbox": st.one_of(BOX, BOX.map(lambda b: [abs(v) if math.isfinite(v) else 1 for v in b]))},
        optional={"referral": NAMES, "iscrowd": st.sampled_from([0, 0, 0, 1])}), min_size=1, max_size=4),
    "categories": st.tuples(CATEGORY, CATEGORY).map(lambda cs: [{"id": i, **c} for i, c in enumerate(cs)]),
})


@fuzz(60)
@given(data=JSON, name=st.sampled_from(["coco", "lvis", "synthetic"]))
def test_coco_like_loaders_on_random_json(tmp_path, data, name):
    write_json_and_load(tmp_path, data, name)


@fuzz(120)
@given(data=NEARLY_COCO, name=st.sampled_from(["coco", "lvis", "synthetic"]))
def test_coco_like_loaders_on_nearly_valid_json(tmp_path, data, name):
    write_json_and_load(tmp_path, data, name)


def write_json_and_load(tmp_path: Path, data, name: str) -> None:
    image(tmp_path / "img/a.jpg")
    text = json.dumps(data)  # lone surrogates are written as \ud800 escapes, valid JSON
    (tmp_path / "ann.json").write_text(text, encoding="utf-8")
    run_loader(name, {"annotations": str(tmp_path / "ann.json"), "images": str(tmp_path / "img")})


@fuzz(40)
@given(raw=st.binary(max_size=60), name=st.sampled_from(["coco", "lvis"]))
def test_coco_like_loaders_on_random_bytes(tmp_path, raw, name):
    image(tmp_path / "img/a.jpg")
    (tmp_path / "ann.json").write_bytes(raw)
    run_loader(name, {"annotations": str(tmp_path / "ann.json"), "images": str(tmp_path / "img")})


TAGS = st.sampled_from(["annotation", "size", "width", "height", "object", "name", "bndbox", "xmin", "ymin",
                        "xmax", "ymax", "difficult", "filename", "pose"])
TEXTS = st.one_of(st.none(), st.sampled_from(["dog", "cat", "diningtable", "1", "0", "12", "40", "-3", "nan",
                                              "1e9", "2.5", " 7 ", ""]),
                  st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=5))
XML_TREE = st.recursive(
    st.tuples(TAGS, TEXTS, st.just([])),
    lambda inner: st.tuples(TAGS, TEXTS, st.lists(inner, max_size=4)), max_leaves=25)
VALID_OBJECT = st.builds(
    lambda name, box, difficult: ("object", None, [("name", name, []), ("difficult", difficult, []),
                                                   ("bndbox", None, [(t, str(v), []) for t, v in
                                                                     zip(("xmin", "ymin", "xmax", "ymax"), box)])]),
    st.sampled_from(["dog", "cat", "tvmonitor", "car"]),
    st.one_of(st.builds(lambda x, y, w, h: [x, y, x + w, y + h], *[st.integers(-10, 35)] * 2, *[st.integers(0, 30)] * 2),
              st.lists(st.one_of(st.integers(-20, 70), st.sampled_from(["1e999", "-0", "2.5"])), min_size=4,
                       max_size=4)),
    st.sampled_from(["0", "0", "1", None]))
NEARLY_VOC = st.builds(
    lambda w, h, objects: ("annotation", None, [("size", None, [("width", w, []), ("height", h, [])]), *objects]),
    st.sampled_from(["40"] * 5 + ["0", "x", None]), st.sampled_from(["30"] * 5 + ["-1", None]),
    st.lists(st.one_of(VALID_OBJECT, VALID_OBJECT, XML_TREE), min_size=1, max_size=3))


def to_xml(node) -> bytes:
    def build(n):
        tag, text, children = n
        el = ET.Element(tag)
        el.text = text
        el.extend(build(c) for c in children)
        return el

    return ET.tostring(build(node))


def voc_root(tmp_path: Path) -> Path:
    root = tmp_path / "VOC2007"
    (root / "ImageSets/Main").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets/Main/test.txt").write_text("000001\n")
    (root / "Annotations").mkdir(exist_ok=True)
    image(root / "JPEGImages/000001.jpg")
    return root


@fuzz(50)
@given(tree=XML_TREE)
def test_voc_loader_on_random_xml(tmp_path, tree):
    root = voc_root(tmp_path)
    (root / "Annotations/000001.xml").write_bytes(to_xml(tree))
    run_loader("pvoc", {"root": str(root)})


@fuzz(120)
@given(tree=NEARLY_VOC)
def test_voc_loader_on_nearly_valid_xml(tmp_path, tree):
    root = voc_root(tmp_path)
    (root / "Annotations/000001.xml").write_bytes(to_xml(tree))
    run_loader("pvoc", {"root": str(root)})


@fuzz(40)
@given(raw=st.one_of(st.binary(max_size=80), st.text(max_size=80).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_voc_loader_on_random_bytes(tmp_path, raw):
    root = voc_root(tmp_path)
    (root / "Annotations/000001.xml").write_bytes(raw)
    run_loader("pvoc", {"root": str(root)})


def refcoco_files(tmp_path: Path) -> dict:
    image(tmp_path / "train2014/COCO_train2014_000000000001.jpg")
    ann = tmp_path / "instances.json"
    if not ann.exists():
        ann.write_text(json.dumps({
            "images": [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "width": 40, "height": 30}],
            "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "bbox": [2, 2, 30, 20]},
                            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [39, 29, 9, 9]}],
            "categories": [{"id": 1, "name": "dog"}]}))
    return {"refs": str(tmp_path / "refs.p"), "annotations": str(ann), "images": str(tmp_path / "train2014")}


PY = st.recursive(
    st.one_of(st.none(), st.integers(-2, 12), st.floats(), st.text(max_size=6), st.binary(max_size=4),
              st.sampled_from(["testA", "val", 10, 11, "sent", "sentences", "ann_id", "split"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.dictionaries(st.sampled_from(["ann_id", "split", "sentences", "sent", "ref_id",
                                                             "image_id", "x"]), inner, max_size=5)),
    max_leaves=25)


NEARLY_REFS = st.lists(st.fixed_dictionaries(
    {"ann_id": st.sampled_from([10, 10, 11, 99, "10"]), "split": st.sampled_from(["testA", "testA", "val"]),
     "sentences": st.lists(st.one_of(st.fixed_dictionaries({"sent": NAMES}), PY), max_size=3)},
    optional={"ref_id": st.integers(0, 3)}), max_size=3)


@fuzz(50)
@given(refs=PY, protocol=st.sampled_from([2, 4]))
def test_refcoco_loader_on_random_pickles(tmp_path, refs, protocol):
    paths = refcoco_files(tmp_path)
    Path(paths["refs"]).write_bytes(pickle.dumps(refs, protocol=protocol))
    run_loader("refcoco", paths)


@fuzz(80)
@given(refs=NEARLY_REFS)
def test_refcoco_loader_on_nearly_valid_pickles(tmp_path, refs):
    paths = refcoco_files(tmp_path)
    Path(paths["refs"]).write_bytes(pickle.dumps(refs, protocol=2))
    run_loader("refcoco", paths)


@fuzz(40)
@given(raw=st.binary(max_size=60))
def test_refcoco_loader_on_random_bytes(tmp_path, raw):
    paths = refcoco_files(tmp_path)
    Path(paths["refs"]).write_bytes(raw)
    run_loader("refcoco", paths)


# ---------------------------------------------------------------------------------------------
# odd category names all the way into the VLM prompt
# ---------------------------------------------------------------------------------------------
_VLM = {}


def tiny_vlm():
    if not _VLM:
        import torch

        from pin.vlm.mini import MiniVLMConfig, build_mini_flamingo
        from pin.vlm.openflamingo import OpenFlamingoAdapter

        torch.set_num_threads(1)
        torch.manual_seed(0)
        cfg = MiniVLMConfig(vision_width=32, vision_layers=1, vision_heads=2, lm_width=32, lm_layers=2, lm_heads=2,
                            perceiver_depth=1, perceiver_latents=4, perceiver_heads=2, perceiver_dim_head=8,
                            xattn_heads=2, xattn_dim_head=8)
        flamingo, proc, tok = build_mini_flamingo(cfg, ["dog", "cup"])
        vlm = OpenFlamingoAdapter(flamingo, proc, tok, name="mini")
        _VLM["vlm"] = vlm
        _VLM["feats"] = vlm.patch_features(vlm.preprocess([Image.new("RGB", (224, 224), (1, 2, 3))]))
    return _VLM["vlm"], _VLM["feats"]


@fuzz(40)
@given(name=st.one_of(ODD_NAMES, st.text(max_size=12),
                      st.sampled_from(["<|endofchunk|>", "</s>", "<pad>", "a <image> b", "<unk>", "\n\n", ""])))
def test_odd_names_make_a_valid_prompt(name):
    import torch

    vlm, feats = tiny_vlm()
    prompt = vlm.prompt(name)
    assert prompt.count("<image>") == 1 and "<|endofchunk|>" not in prompt and "\n" not in prompt
    loss = vlm.answer_loss(feats, [prompt], [" [0,0,28,28]"])
    assert torch.isfinite(loss)
    assert isinstance(vlm.generate(feats, [prompt], max_new_tokens=3)[0], str)
