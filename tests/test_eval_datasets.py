"""Each evaluation loader on a tiny fixture written in the real format, and its failure modes."""
from __future__ import annotations

import json
import re
import os
import pickle
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pin.errors import PinError
from pin.eval.datasets import load_queries
from pin.eval.query import Query, from_frame, to_frame
from pin.params import EvalParams, parse_section

N_EXAMPLES = int(os.environ.get("PIN_HYPOTHESIS_N", 0))  # raise it for a longer fuzzing run
FIXTURE = [HealthCheck.function_scoped_fixture]  # tmp_path is shared across examples on purpose


def cfg(**paths) -> EvalParams:
    extra = paths.pop("_extra", {})
    return parse_section("eval", {"paths": paths, **extra})


def jpeg(path: Path, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 30, 200)).save(path, format="JPEG")


def coco_json(path: Path, images: Path, n_missing: int = 0) -> dict:
    """Image 1: one object + one crowd region; image 2: 4 objects (excluded); image 3: two;
    image 4: no object (excluded)."""
    ims = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 40, "height": 30} for i in (1, 2, 3, 4)]
    anns = [
        {"id": 10, "image_id": 1, "category_id": 1, "bbox": [4, 3, 20, 15], "iscrowd": 0, "area": 300},
        {"id": 11, "image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10], "iscrowd": 1, "area": 100},
        *({"id": 20 + k, "image_id": 2, "category_id": 1, "bbox": [k, k, 5, 5], "iscrowd": 0}
          for k in range(4)),
        {"id": 30, "image_id": 3, "category_id": 2, "bbox": [0, 0, 40, 30], "iscrowd": 0},
        {"id": 31, "image_id": 3, "category_id": 1, "bbox": [10, 5, 10, 10], "iscrowd": 0},
    ]
    cats = [{"id": 1, "name": "dining_table"}, {"id": 2, "name": "person"}]
    data = {"images": ims, "annotations": anns, "categories": cats}
    path.write_text(json.dumps(data))
    for im in ims[n_missing:]:
        jpeg(images / im["file_name"])
    return data


@pytest.mark.parametrize("name", ["coco", "synthetic"])
def test_coco_format(tmp_path, name):
    coco_json(tmp_path / "ann.json", tmp_path / "img")
    qs, stats = load_queries(name, cfg(**{name: {"annotations": str(tmp_path / "ann.json"),
                                                 "images": str(tmp_path / "img")}}))
    assert [(q.image_id, q.ann_id, q.text) for q in qs] == [
        (1, 10, "dining table"), (3, 30, "person"), (3, 31, "dining table")]
    q = qs[0]
    assert q.gt_box == (4.0, 3.0, 24.0, 18.0) and q.image_size == (40, 30)
    assert q.gt_box_224 == pytest.approx((4 * 5.6, 3 * 224 / 30, 24 * 5.6, 18 * 224 / 30))
    assert from_frame(q.gt_box_224, q.image_size) == pytest.approx(q.gt_box)
    assert q.load_image().size == (40, 30)
    assert len({q.query_id for q in qs}) == 3
    assert stats["n_images_total"] == 4 and stats["n_images_selected"] == 2
    assert stats["n_crowd_skipped"] == 1 and stats["n_images_too_many"] == 1
    assert stats["n_images_empty"] == 1 and stats["n_queries"] == 3 and stats["n_images"] == 2


def test_synthetic_query_text(tmp_path):
    data = coco_json(tmp_path / "ann.json", tmp_path / "img")
    data["annotations"][-1]["referral"] = "left dining table"
    (tmp_path / "ann.json").write_text(json.dumps(data))
    qs, _ = load_queries("synthetic", cfg(synthetic={"annotations": str(tmp_path / "ann.json"),
                                                     "images": str(tmp_path / "img")}))
    assert qs[-1].text == "left dining table" and qs[-1].category == "dining table"


def test_max_queries_deterministic(tmp_path):
    coco_json(tmp_path / "ann.json", tmp_path / "img")
    paths = {"annotations": str(tmp_path / "ann.json"), "images": str(tmp_path / "img")}
    c = cfg(_extra={"max_queries": 2}, coco=paths)
    a, sa = load_queries("coco", c)
    b, _ = load_queries("coco", c)
    assert a == b and len(a) == 2 and sa["n_queries_total"] == 3 and sa["n_queries"] == 2


def test_missing_images(tmp_path):
    coco_json(tmp_path / "ann.json", tmp_path / "img", n_missing=1)  # image 1 absent
    paths = {"annotations": str(tmp_path / "ann.json"), "images": str(tmp_path / "img")}
    with pytest.raises(PinError, match="1 of 2 selected coco images are missing"):
        load_queries("coco", cfg(coco=paths))
    qs, stats = load_queries("coco", cfg(_extra={"max_missing": 0.5}, coco=paths))
    assert stats["n_missing_images"] == 1 and [q.image_id for q in qs] == [3, 3]


def test_boxes_outside_the_image_are_cut_or_skipped_and_odd_names_cleaned(tmp_path):
    ims = [{"id": 1, "file_name": "1.jpg", "width": 40, "height": 30}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [30, 20, 20, 20]},  # reaches out: cut
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 5, 10, 10]},  # all outside: skipped
            {"id": 3, "image_id": 1, "category_id": 2, "bbox": [-5, -5, 10, 10]},  # from negative: cut
            {"id": 4, "image_id": 1, "category_id": 2, "bbox": [5, 5, 0, 10]}]  # no width: degenerate
    cats = [{"id": 1, "name": "hot\n dog\t"}, {"id": 2, "name": "\u0000cup_\ud800"}]
    (tmp_path / "ann.json").write_text(json.dumps({"images": ims, "annotations": anns, "categories": cats}))
    jpeg(tmp_path / "img/1.jpg")
    qs, stats = load_queries("coco", cfg(coco={"annotations": str(tmp_path / "ann.json"),
                                               "images": str(tmp_path / "img")}))
    assert [(q.ann_id, q.gt_box, q.text) for q in qs] == [(1, (30.0, 20.0, 40.0, 30.0), "hot dog"),
                                                          (3, (0.0, 0.0, 5.0, 5.0), "cup")]
    assert stats["n_boxes_clipped"] == 2 and stats["n_outside_skipped"] == 1 and stats["n_degenerate_skipped"] == 1


def test_lvis(tmp_path):
    url = "http://images.cocodataset.org/{}/{:012d}.jpg"
    ims = [{"id": 7, "coco_url": url.format("val2017", 7), "width": 40, "height": 30},
           {"id": 8, "coco_url": url.format("train2017", 8), "width": 40, "height": 30}]
    cats = [{"id": 1, "name": "aerosol_can", "synonyms": ["aerosol_can", "spray_can"], "frequency": "c"},
            {"id": 2, "name": "apple", "synonyms": ["apple"], "frequency": "f"}]
    anns = [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 5]},
            {"id": 2, "image_id": 8, "category_id": 2, "bbox": [2, 2, 8, 8]}]
    (tmp_path / "lvis.json").write_text(json.dumps({"images": ims, "annotations": anns, "categories": cats}))
    jpeg(tmp_path / "coco" / "000000000007.jpg")  # flat folder
    jpeg(tmp_path / "coco" / "train2017" / "000000000008.jpg")  # or COCO root layout
    qs, stats = load_queries("lvis", cfg(lvis={"annotations": str(tmp_path / "lvis.json"),
                                               "images": str(tmp_path / "coco")}))
    assert [q.text for q in qs] == ["aerosol can", "apple"]
    assert qs[1].image_path == tmp_path / "coco" / "train2017" / "000000000008.jpg"
    assert stats["n_queries_c"] == 1 and stats["n_queries_f"] == 1 and stats["n_missing_images"] == 0


VOC_XML = """<annotation><folder>VOC2007</folder><filename>{id}.jpg</filename>
<size><width>40</width><height>30</height><depth>3</depth></size>{objects}</annotation>"""
VOC_OBJ = """<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>
<difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>
<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"""


def voc(root: Path, images: dict[str, list]) -> None:
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{i}\n" for i in images))
    for image_id, objs in images.items():
        body = "".join(VOC_OBJ.format(name=n, d=d, b=b) for n, d, b in objs)
        (root / "Annotations" / f"{image_id}.xml").write_text(VOC_XML.format(id=image_id, objects=body))
        jpeg(root / "JPEGImages" / f"{image_id}.jpg")


def test_pvoc(tmp_path):
    voc(tmp_path / "VOC2007", {
        "000001": [("diningtable", 0, (1, 1, 20, 20)), ("tvmonitor", 1, (5, 5, 9, 9))],
        "000002": [("aeroplane", 0, (1, 1, 40, 30))] * 4,
    })
    qs, stats = load_queries("pvoc", cfg(pvoc={"root": str(tmp_path / "VOC2007")}))
    assert [q.text for q in qs] == ["dining table"]
    assert qs[0].gt_box == (0.0, 0.0, 20.0, 20.0) and qs[0].image_id == "000001"
    assert stats["n_difficult_skipped"] == 1 and stats["n_images_too_many"] == 1


def test_pvoc_queries_say_what_pretraining_and_compose_say(tmp_path):
    # one rule for category names (pin.categories.query_name): the mini VLM is pretrained and the
    # composed images are captioned with the same words the VOC queries use
    from pin.categories import load_set, query_name

    classes = [c.name for c in load_set("pvoc")]
    voc(tmp_path / "VOC2007", {f"{i:06d}": [(name, 0, (1, 1, 20, 20))] for i, name in enumerate(classes)})
    qs, _ = load_queries("pvoc", cfg(pvoc={"root": str(tmp_path / "VOC2007")}))
    said = {q.category_id: q.text for q in qs}
    assert said == {name: query_name(name) for name in classes}
    assert said["diningtable"] == "dining table" and said["tvmonitor"] == "tv monitor"


def test_pvoc_malformed_xml(tmp_path):
    voc(tmp_path / "VOC2007", {"000001": [("dog", 0, (1, 1, 20, 20))]})
    (tmp_path / "VOC2007" / "Annotations" / "000001.xml").write_text("<annotation><size>")
    with pytest.raises(PinError, match=r"000001\.xml: not valid XML"):
        load_queries("pvoc", cfg(pvoc={"root": str(tmp_path / "VOC2007")}))


def refcoco(tmp_path: Path) -> dict:
    coco_json(tmp_path / "instances.json", tmp_path / "train2014")
    refs = [
        {"ref_id": 0, "ann_id": 30, "image_id": 3, "split": "testA", "category_id": 2,
         "sentences": [{"sent": "man on the left", "raw": "Man on the left", "tokens": []},
                       {"sent": "guy in red"}]},
        {"ref_id": 1, "ann_id": 21, "image_id": 2, "split": "testA", "category_id": 1,
         "sentences": [{"sent": "table top"}]},
        {"ref_id": 2, "ann_id": 10, "image_id": 1, "split": "train", "category_id": 1,
         "sentences": [{"sent": "not in testA"}]},
    ]
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    return {"refs": str(tmp_path / "refs(unc).p"), "annotations": str(tmp_path / "instances.json"),
            "images": str(tmp_path / "train2014")}


def test_refcoco(tmp_path):
    paths = refcoco(tmp_path)
    qs, stats = load_queries("refcoco", cfg(refcoco={**paths, "sentences": "all"}))
    assert [q.text for q in qs] == ["man on the left", "guy in red", "table top"]
    assert stats["n_refs"] == 2 and stats["n_queries"] == 3 and len({q.query_id for q in qs}) == 3
    man = next(q for q in qs if q.text == "man on the left")
    assert man.gt_box == (0.0, 0.0, 40.0, 30.0) and man.category == "person"
    qs, _ = load_queries("refcoco", cfg(refcoco={**paths, "sentences": "first"}))
    assert sorted(q.text for q in qs) == ["man on the left", "table top"]


def test_refcoco_refuses_code_in_pickle(tmp_path):
    paths = refcoco(tmp_path)
    Path(paths["refs"]).write_bytes(pickle.dumps([Path("x")]))
    with pytest.raises(PinError, match=r"refs\(unc\)\.p: not a readable refs pickle"):
        load_queries("refcoco", cfg(refcoco=paths))


@pytest.mark.parametrize("name,param", [
    ("coco", "eval.paths.coco.annotations"), ("lvis", "eval.paths.lvis.annotations"),
    ("pvoc", "eval.paths.pvoc.root"), ("refcoco", "eval.paths.refcoco.refs")])
def test_unset_path_names_the_param(name, param):
    with pytest.raises(PinError, match=rf"{param} is not set"):
        load_queries(name, cfg())


def test_missing_and_malformed_files(tmp_path):
    paths = {"annotations": str(tmp_path / "nope.json"), "images": str(tmp_path)}
    with pytest.raises(PinError, match=r"nope\.json: file not found"):
        load_queries("coco", cfg(coco=paths))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PinError, match=r"bad\.json: not valid JSON"):
        load_queries("coco", cfg(coco={**paths, "annotations": str(tmp_path / "bad.json")}))
    coco_json(tmp_path / "ann.json", tmp_path / "img")
    with pytest.raises(PinError, match=r"nofolder: folder not found \(set eval.paths.coco.images\)"):
        load_queries("coco", cfg(coco={"annotations": str(tmp_path / "ann.json"),
                                       "images": str(tmp_path / "nofolder")}))
    with pytest.raises(PinError, match="unknown eval dataset"):
        load_queries("imagenet", cfg())


def test_annotation_of_unknown_image(tmp_path):
    data = coco_json(tmp_path / "ann.json", tmp_path / "img")
    data["annotations"][0]["image_id"] = 99
    (tmp_path / "ann.json").write_text(json.dumps(data))
    with pytest.raises(PinError, match=r"ann\.json: annotations\[0\] \(id 10\) refers to image 99"):
        load_queries("coco", cfg(coco={"annotations": str(tmp_path / "ann.json"),
                                       "images": str(tmp_path / "img")}))


def test_synthetic_default_paths():
    c = EvalParams()
    assert c.datasets == ["synthetic"]
    assert c.paths.synthetic.annotations == "data/composed/heldout/annotations.json"
    assert c.paths.coco.annotations is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 50) | st.floats(allow_nan=True) | st.text(max_size=4),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
    max_leaves=12)

def mostly(valid, p_valid: int = 3):
    """A field that is usually well-formed and sometimes any JSON value."""
    return st.sampled_from([True] * p_valid + [False]).flatmap(lambda ok: valid if ok else json_values)


def entry(required: dict, optional: dict | None = None):
    return mostly(st.fixed_dictionaries({k: mostly(v, 12) for k, v in required.items()},
                                        optional={k: mostly(v, 12) for k, v in (optional or {}).items()}), 12)


coco_like = mostly(st.fixed_dictionaries({
    "images": mostly(st.lists(entry(
        {"id": st.integers(0, 2), "width": st.integers(1, 50), "height": st.integers(1, 50),
         "file_name": st.just("a.jpg")}, {"coco_url": st.just("http://x/val2017/a.jpg")}), max_size=3), 6),
    "annotations": mostly(st.lists(entry(
        {"id": st.integers(0, 9), "image_id": st.integers(0, 2), "category_id": st.integers(0, 2),
         "bbox": st.tuples(*[st.integers(-2, 40)] * 2, *[st.integers(0, 40)] * 2).map(list)},
        {"iscrowd": st.integers(0, 1), "referral": st.text(max_size=5)}), max_size=5), 6),
    "categories": mostly(st.lists(entry(
        {"id": st.integers(0, 2), "name": st.text(max_size=5)},
        {"synonyms": st.lists(st.text(max_size=5), max_size=2), "frequency": st.sampled_from("rcf")}),
        max_size=3), 6),
}), 6)


@settings(max_examples=N_EXAMPLES or 60, deadline=None, suppress_health_check=FIXTURE)
@given(data=coco_like, name=st.sampled_from(["coco", "lvis", "synthetic"]))
def test_loaders_only_raise_pinerror(tmp_path, data, name):
    if not (tmp_path / "img" / "a.jpg").exists():
        jpeg(tmp_path / "img" / "a.jpg")
    (tmp_path / "a.json").write_text(json.dumps(data))
    c = cfg(**{name: {"annotations": str(tmp_path / "a.json"), "images": str(tmp_path / "img")}})
    try:
        qs, _ = load_queries(name, c)
    except PinError:
        return
    assert all(isinstance(q, Query) for q in qs)


@settings(max_examples=N_EXAMPLES or 30, deadline=None, suppress_health_check=FIXTURE)
@given(refs=mostly(st.lists(entry(
    {"ann_id": st.sampled_from([10, 30, 31, 99]), "split": st.sampled_from(["testA", "val"]),
     "sentences": st.lists(entry({"sent": st.text(max_size=6)}), max_size=2)},
    {"ref_id": st.integers(0, 3), "image_id": st.integers(0, 3)}), max_size=3), 6))
def test_refcoco_only_raises_pinerror(tmp_path, refs):
    paths = refcoco(tmp_path)
    Path(paths["refs"]).write_bytes(pickle.dumps(refs))
    try:
        load_queries("refcoco", cfg(refcoco=paths))
    except PinError:
        pass


def test_to_frame():
    assert to_frame((0, 0, 640, 480), (640, 480)) == (0, 0, 224, 224)


# ---- real-format files written by others (issue 24) ----------------------------------------------
def test_lvis_v05_file_names_with_coco_2017_images(tmp_path):
    """lvis-api's lvis_val_100.json (v0.5): file_name COCO_val2014_..., coco_url at val2017; the
    images laid out as a COCO-2017 user has them are found by the coco_url basename."""
    url = "http://images.cocodataset.org/val2017/{:012d}.jpg"
    ims = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg", "coco_url": url.format(i), "width": 40,
            "height": 30} for i in (139, 285)]
    cats = [{"id": 1, "name": "apple", "synonyms": ["apple"], "frequency": "f"}]
    anns = [{"id": i, "image_id": im["id"], "category_id": 1, "bbox": [1, 1, 5, 5]} for i, im in enumerate(ims, 1)]
    (tmp_path / "lvis.json").write_text(json.dumps({"images": ims, "annotations": anns, "categories": cats}))
    jpeg(tmp_path / "coco/val2017/000000000139.jpg")
    jpeg(tmp_path / "coco/COCO_val2014_000000000285.jpg")  # a flat folder of 2014 names still works
    qs, stats = load_queries("lvis", cfg(lvis={"annotations": str(tmp_path / "lvis.json"),
                                               "images": str(tmp_path / "coco")}))
    assert [q.image_path.relative_to(tmp_path / "coco").as_posix() for q in qs] == [
        "val2017/000000000139.jpg", "COCO_val2014_000000000285.jpg"]
    assert stats["n_missing_images"] == 0


@pytest.mark.parametrize("split", ["val", "trainval"])
def test_pvoc_split_param_and_float_sizes(tmp_path, split):
    root = tmp_path / "VOC2007"
    voc(root, {"000001": [("dog", "yes", (1, 1, 20, 20)), ("cat", "0", (2, 2, 30.5, 25))]})
    (root / "ImageSets/Main/test.txt").rename(root / f"ImageSets/Main/{split}.txt")
    xml = root / "Annotations/000001.xml"
    xml.write_text(xml.read_text().replace("<width>40</width>", "<width>40.0</width>"))
    with pytest.raises(PinError, match=r"ImageSets/Main/test\.txt: file not found .*eval\.paths\.pvoc\.split='test', "
                                       rf"lists here: {split}\)"):
        load_queries("pvoc", cfg(pvoc={"root": str(root)}))
    qs, stats = load_queries("pvoc", cfg(pvoc={"root": str(root), "split": split}))
    assert [(q.text, q.gt_box, q.image_size) for q in qs] == [("cat", (1.0, 1.0, 30.5, 25.0), (40, 30))]
    assert stats["n_difficult_skipped"] == 1  # <difficult>yes</difficult>


def test_pvoc_difficult_that_is_no_flag_is_named(tmp_path):
    voc(tmp_path / "VOC2007", {"000001": [("dog", "maybe", (1, 1, 20, 20))]})
    with pytest.raises(PinError, match=r"000001\.xml: object 0 \(dog\): <difficult> must be 0 or 1 "
                                       r"\(or yes/no, true/false\), got 'maybe'"):
        load_queries("pvoc", cfg(pvoc={"root": str(tmp_path / "VOC2007")}))


@pytest.mark.parametrize("where, what", [("images", "images[3]: image id 3 is listed twice (also images[2])"),
                                         ("annotations", "annotations[6]: annotation id 30 is listed twice "
                                                         "(also annotations[4])")])
def test_duplicate_ids_are_refused_naming_the_id(tmp_path, where, what):
    data = coco_json(tmp_path / "ann.json", tmp_path / "img")
    if where == "images":
        data["images"][3]["id"] = 3
    else:
        data["annotations"][4]["id"] = 30
    (tmp_path / "ann.json").write_text(json.dumps(data))
    with pytest.raises(PinError, match=re.escape(f"{tmp_path / 'ann.json'}: {what}")):
        load_queries("coco", cfg(coco={"annotations": str(tmp_path / "ann.json"), "images": str(tmp_path / "img")}))


def test_no_query_says_which_rule_removed_how_many(tmp_path):
    data = coco_json(tmp_path / "ann.json", tmp_path / "img")
    for a in data["annotations"]:
        a["bbox"] = [100, 100, 5, 5] if a["image_id"] == 1 else [1, 1, 0, 5]  # outside / no area
    (tmp_path / "ann.json").write_text(json.dumps(data))
    with pytest.raises(PinError, match=re.escape(
            "coco: no query selected from 4 images: 4 have no usable box (boxes skipped: 1 crowd, 6 with no area, "
            "1 outside their image); 0 have more than eval.max_objects=3 objects; 0 image files are missing")):
        load_queries("coco", cfg(coco={"annotations": str(tmp_path / "ann.json"), "images": str(tmp_path / "img")}))


def test_refcoco_empty_split_is_named(tmp_path):
    paths = refcoco(tmp_path)
    with pytest.raises(PinError, match=r"no ref in split eval\.paths\.refcoco\.split='val' \(the file's splits: "):
        load_queries("refcoco", cfg(refcoco={**paths, "split": "val"}))
