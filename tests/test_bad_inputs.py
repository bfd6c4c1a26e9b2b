"""Bad inputs: each case runs a DVC stage's entry point (``stages/<stage>.py``, as ``dvc repro``
would, in-process in a scratch folder) and checks what the user sees: one ``[stage] error: ...``
line naming the file or key, exit status 1, no traceback - or, for the inputs that are skipped
and counted, exit 0 and the count.

    python tests/test_bad_inputs.py      # prints the table of docs/reliability.md
"""
from __future__ import annotations

import io
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # `python tests/test_bad_inputs.py`: this checkout's pin
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

torch.set_num_threads(1)

from stage_runner import PARAMS, run_entry, write_params  # noqa: E402


# ------------------------------------------------------------------------------------------------
# workspace helpers
# ------------------------------------------------------------------------------------------------
def objects(ws: Path, per_category: int = 5) -> Path:
    """data/objects in the generate stage's format: 4 categories x ``per_category`` shapes."""
    from pin.synth.filter import write_object_fixture

    out = ws / "data/objects"
    write_object_fixture(out, {"apple": "train", "banana": "train", "cup": "heldout", "dog": "heldout"},
                         per_category=per_category)
    return out


def filtered(ws: Path) -> None:
    from pin.params import FilterParams
    from pin.synth.filter import run_filter

    objects(ws)
    run_filter(FilterParams(min_per_class=2), ws / "data/objects", ws / "data/filtered", ws / "m.json",
               progress=False)


_MODELS: dict[str, Path] = {}


def models(ws: Path) -> None:
    """A tiny mini VLM (models/mini_vlm) and a PositionalInsert for it (models/pin), built once."""
    if "dir" not in _MODELS:
        import tempfile

        from pin.insert import InsertConfig, PositionalInsert
        from pin.vlm.mini import MiniVLMConfig, build_mini_flamingo, save_mini
        from pin.vlm.openflamingo import OpenFlamingoAdapter

        root = Path(tempfile.mkdtemp(prefix="pin-bad-inputs-"))
        cfg = MiniVLMConfig(vision_width=32, vision_layers=1, vision_heads=2, lm_width=32, lm_layers=2,
                            lm_heads=2, perceiver_depth=1, perceiver_latents=8, perceiver_heads=2,
                            perceiver_dim_head=16, xattn_heads=2, xattn_dim_head=16)
        torch.manual_seed(0)
        flamingo, proc, tok = build_mini_flamingo(cfg, ["dog", "cup", "dining", "table", "person"])
        save_mini(root / "mini_vlm", flamingo, tok, cfg)
        site = OpenFlamingoAdapter(flamingo, proc, tok, name="mini").site
        PositionalInsert(InsertConfig.for_site(site, layers=1, hidden=(8,))).save_pretrained(root / "pin")
        _MODELS["dir"] = root
    shutil.copytree(_MODELS["dir"], ws / "models", dirs_exist_ok=True)


def jpeg(path: Path, size=(40, 30)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 30, 200)).save(path, format="JPEG")


def coco(ws: Path, images: int = 3, **edit) -> tuple[Path, Path]:
    """A COCO-format annotation file (one object per image) and its images under ws/coco."""
    ims = [{"id": i, "file_name": f"{i}.jpg", "width": 40, "height": 30} for i in range(1, images + 1)]
    anns = [{"id": 10 + i, "image_id": i, "category_id": 1, "bbox": [4, 3, 20, 15], "iscrowd": 0}
            for i in range(1, images + 1)]
    data = {"images": ims, "annotations": anns, "categories": [{"id": 1, "name": "dog"}]}
    for key, fn in edit.items():
        fn(data)
    ann, img = ws / "coco/ann.json", ws / "coco/images"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps(data))
    for im in ims:
        jpeg(img / im["file_name"])
    return ann, img


def coco_params(ws: Path, ann, img, **extra) -> None:
    write_params(ws, eval={"datasets": ["coco"], "paths": {**PARAMS["eval"]["paths"],
                                                           "coco": {"annotations": str(ann), "images": str(img)}},
                           **extra})


@dataclass(frozen=True)
class Case:
    id: str
    what: str  # the bad input, for the table
    stage: str
    setup: Callable[[Path], None]
    expect: str  # regex the whole stderr line must match (after "[stage] error: "), or stdout text for code 0
    code: int = 1
    args: tuple[str, ...] = ()


def _corrupt(n: int, truncated: bool = False) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        write_params(ws, filter={"min_per_class": 2})
        out = objects(ws)
        for i in range(n):
            png = out / f"images/apple/{i}.png"
            data = png.read_bytes()
            png.write_bytes(data[: len(data) // 2] if truncated else b"")
    return setup


def _bad_params(**overrides) -> Callable[[Path], None]:
    return lambda ws: write_params(ws, **overrides)


def _raw_params(text: str) -> Callable[[Path], None]:
    return lambda ws: (ws / "params.yaml").write_text(text)


def _backgrounds(n_good: int, n_bad: int) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        filtered(ws)
        for i in range(n_good):
            jpeg(ws / f"bg/{i}.jpg", (64, 64))
        for i in range(n_bad):
            (ws / f"bg/bad{i}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
        write_params(ws, compose={"backgrounds": "bg", "image_size": 112, "n_train": 4, "n_val": 0,
                                  "n_heldout": 2, "n_pretrain": 0, "shard_size": 4, "workers": 1})
    return setup


def composed_train(ws: Path) -> None:
    """A one-shard data/composed/train (the random and constant baselines draw its boxes)."""
    from pin.synth.shards import write_shard

    buf = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (224, 224), (10, 200, 30)).save(buf, format="JPEG")
    obj = {"category": "dog", "box": [28, 28, 112, 140], "grid_box": [1, 1, 4, 5], "referral": "dog",
           "source": "images/dog/0.png"}
    records = [{"image_id": i + 1, "image": buf.getvalue(), "format": "jpeg", "width": 224, "height": 224,
                "background": "texture:noise:1", "seed": i, "objects": [obj]} for i in range(4)]
    write_shard(ws / "data/composed/train/part-00000.parquet", records)


def _eval(setup_data: Callable[[Path], tuple[Path, Path]], **extra) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        models(ws)
        composed_train(ws)
        ann, img = setup_data(ws)
        coco_params(ws, ann, img, **extra)
    return setup


def _truncate_images(n: int) -> Callable[[Path], tuple[Path, Path]]:
    def data(ws: Path):
        ann, img = coco(ws, images=4)
        for i in range(1, n + 1):
            raw = (img / f"{i}.jpg").read_bytes()
            (img / f"{i}.jpg").write_bytes(raw[: len(raw) // 3])
        return ann, img
    return data


def _voc(xml: str) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        models(ws)
        root = ws / "VOC2007"
        (root / "ImageSets/Main").mkdir(parents=True)
        (root / "ImageSets/Main/test.txt").write_text("000001\n")
        (root / "Annotations").mkdir()
        (root / "Annotations/000001.xml").write_text(xml)
        jpeg(root / "JPEGImages/000001.jpg")
        write_params(ws, eval={"datasets": ["pvoc"], "paths": {**PARAMS["eval"]["paths"], "pvoc": {"root": str(root)}}})
    return setup


def _refs(raw: bytes) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        models(ws)
        composed_train(ws)
        ann, img = coco(ws)
        (ws / "refs.p").write_bytes(raw)
        write_params(ws, eval={"datasets": ["refcoco"], "paths": {
            **PARAMS["eval"]["paths"], "refcoco": {"refs": str(ws / "refs.p"), "annotations": str(ann),
                                                   "images": str(img)}}})
    return setup


def _shard_damaged(ws: Path) -> None:
    write_params(ws)
    models(ws)
    split = ws / "data/composed/train"
    split.mkdir(parents=True)
    (split / "part-00000.parquet").write_bytes(b"PAR1 half a shard")



# --- issue 24: the cases of the fault-finding round ------------------------------------------------
def _composed(ws: Path) -> None:
    """A finished tiny compose run (builtin backgrounds) whose shards a rerun reuses."""
    filtered(ws)
    write_params(ws, compose={"image_size": 112, "n_train": 4, "n_val": 0, "n_heldout": 2, "n_pretrain": 0,
                              "shard_size": 4, "workers": 1})
    assert run_entry("compose", ws)[0] == 0


def _truncated_shard(ws: Path) -> None:
    _composed(ws)
    shard = ws / "data/composed/train/part-00000.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])


def _truncated_backgrounds(n_good: int, n_bad: int) -> Callable[[Path], None]:
    """Background JPEGs whose header reads but whose data stops halfway."""
    def setup(ws: Path) -> None:
        import numpy as np
        from PIL import Image

        filtered(ws)
        rng = np.random.default_rng(0)
        for i in range(n_good + n_bad):
            path = ws / f"bg/{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, quality=90)
            if i >= n_good:
                path.write_bytes(path.read_bytes()[:1500])
        write_params(ws, compose={"backgrounds": "bg", "image_size": 112, "n_train": 4, "n_val": 0,
                                  "n_heldout": 2, "n_pretrain": 0, "shard_size": 4, "workers": 1})
    return setup


def _damaged_object_png(ws: Path) -> None:
    """A finished generate run (shapes) with one of its PNGs then cut short."""
    write_params(ws, generate={"backend": "shapes", "per_category": 1, "max_categories": 2, "image_size": 32})
    assert run_entry("generate", ws)[0] == 0
    png = sorted((ws / "data/objects/images").rglob("*.png"))[0]
    png.write_bytes(png.read_bytes()[:60])


def _train_ws(**overrides) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        models(ws)
        composed_train(ws)
        write_params(ws, **overrides)
    return setup


def _mini_truncated(ws: Path) -> None:
    _train_ws()(ws)
    weights = ws / "models/mini_vlm/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])


def _dup(kind: str) -> Callable[[Path], tuple[Path, Path]]:
    def data(ws: Path):
        def edit(d):
            if kind == "image":
                d["images"][2]["id"] = 2
            else:
                d["annotations"][2]["id"] = 11
        return coco(ws, e=edit)
    return data


def _degenerate(ws: Path):
    return coco(ws, e=lambda d: [a.update(bbox=[4, 3, 0, 15]) for a in d["annotations"]])


def _voc_ok(split: str = "test", width: str = "40", difficult: str = "0") -> Callable[[Path], None]:
    """A one-image VOC folder (a dog, and a difficult cat) that evaluates."""
    def setup(ws: Path) -> None:
        models(ws)
        composed_train(ws)
        root = ws / "VOC2007"
        (root / "ImageSets/Main").mkdir(parents=True)
        (root / f"ImageSets/Main/{split}.txt").write_text("000001\n")
        (root / "Annotations").mkdir()
        (root / "Annotations/000001.xml").write_text(
            f"<annotation><size><width>{width}</width><height>30</height></size><object><name>dog</name>"
            "<bndbox><xmin>2</xmin><ymin>2</ymin><xmax>20.5</xmax><ymax>20</ymax></bndbox></object>"
            f"<object><name>cat</name><difficult>{difficult}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
            "<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>")
        jpeg(root / "JPEGImages/000001.jpg")
        write_params(ws, eval={"datasets": ["pvoc"], "max_missing": 0.0, "gallery_size": 0, "paths": {
            **PARAMS["eval"]["paths"], "pvoc": {"root": str(root), "split": "test" if split == "only" else split}}})
    return setup


def _lvis_v05(ws: Path) -> None:
    """lvis-api's lvis_val_100.json layout (v0.5): file_name COCO_val2014_*, coco_url at val2017;
    the images where a COCO-2017 user has them."""
    models(ws)
    composed_train(ws)
    url = "http://images.cocodataset.org/val2017/{:012d}.jpg"
    ims = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg", "coco_url": url.format(i), "width": 40,
            "height": 30} for i in (139, 285)]
    anns = [{"id": k, "image_id": im["id"], "category_id": 1, "bbox": [4, 3, 20, 15]} for k, im in enumerate(ims, 1)]
    data = {"images": ims, "annotations": anns,
            "categories": [{"id": 1, "name": "dog", "synonyms": ["dog"], "frequency": "f"}]}
    (ws / "lvis.json").write_text(json.dumps(data))
    for im in ims:
        jpeg(ws / "coco/val2017" / f"{im['id']:012d}.jpg")
    write_params(ws, eval={"datasets": ["lvis"], "max_missing": 0.0, "gallery_size": 0, "paths": {
        **PARAMS["eval"]["paths"], "lvis": {"annotations": str(ws / "lvis.json"), "images": str(ws / "coco")}}})


def _refs_other_split(ws: Path) -> None:
    import pickle

    refs = [{"ref_id": 0, "ann_id": 11, "image_id": 1, "split": "train", "sentences": [{"sent": "the dog"}]}]
    _refs(pickle.dumps(refs, protocol=2))(ws)



P = re.escape
CASES = [
    # --- params --------------------------------------------------------------------------------
    Case("o_max", "compose.o_max: 1.5", "compose", _bad_params(compose={"o_max": 1.5}),
         P("compose.o_max: Input should be less than or equal to 1 (got 1.5)")),
    Case("o_max_neg", "compose.o_max: -0.1", "compose", _bad_params(compose={"o_max": -0.1}),
         P("compose.o_max: Input should be greater than or equal to 0 (got -0.1)")),
    Case("a_max", "compose.a_max: 0", "compose", _bad_params(compose={"a_max": 0}),
         P("compose.a_max: Input should be greater than or equal to 1 (got 0)")),
    Case("s_order", "compose.s_min: [0.5, 0.2, 0.1], s_max: [0.4, 1, 1]", "compose",
         _bad_params(compose={"s_min": [0.5, 0.2, 0.1], "s_max": [0.4, 1, 1]}),
         P("compose.s_min[0]: need 0 < compose.s_min[0] <= compose.s_max[0] <= 1 (got 0.5 and 0.4)")),
    Case("s_len", "compose.a_max: 4 with 3 sizes", "compose", _bad_params(compose={"a_max": 4}),
         P("compose.s_min: needs one entry per object count up to compose.a_max=4 (got 3: [0.3, 0.2, 0.1])")),
    Case("grid", "compose.grid: 15 (image_size 224)", "compose", _bad_params(compose={"grid": 15}),
         P("compose.grid: must divide compose.image_size=224 (got 15)")),
    Case("type", "compose.o_max: lots", "compose", _bad_params(compose={"o_max": "lots"}),
         P("compose.o_max: Input should be a valid number, unable to parse string as a number (got 'lots')")),
    Case("bool", "generate.per_category: true", "generate", _bad_params(generate={"per_category": True}),
         P("generate.per_category: Input should be a number, not a boolean (got True)")),
    Case("unknown", "compose.o_maxx: 0.3 (typo)", "compose", _bad_params(compose={"o_maxx": 0.3}),
         P("compose.o_maxx: unknown key (got 0.3)")),
    Case("area", "filter.min_area: 0.9, max_area: 0.1", "filter",
         _bad_params(filter={"min_area": 0.9, "max_area": 0.1}),
         P("filter.min_area: must be <= filter.max_area=0.1 (got 0.9)")),
    Case("max_corrupt", "filter.max_corrupt: 2", "filter", _bad_params(filter={"max_corrupt": 2}),
         P("filter.max_corrupt: Input should be less than or equal to 1 (got 2)")),
    Case("train_lr", "train.lr: 0", "train", _bad_params(train={"lr": 0}),
         P("train.lr: Input should be greater than 0 (got 0)")),
    Case("params_empty", "params.yaml empty", "generate", _raw_params(""),
         P("params.yaml: the params file is empty")),
    Case("params_yaml", "params.yaml not YAML", "generate", _raw_params("generate: [1, 2\n"),
         P("params.yaml: not valid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'")),
    Case("params_list", "params.yaml a list", "generate", _raw_params("- 1\n"),
         P("params.yaml: top level must be a mapping, got list")),
    Case("params_missing", "no params.yaml", "generate", lambda ws: None, P("params.yaml: params file not found")),
    Case("section_type", "compose: 3", "compose", _raw_params("compose: 3\n"),
         P("compose: expected a mapping, got int")),
    # --- images ----------------------------------------------------------------------------------
    Case("corrupt_few", "1 of 20 object PNGs empty (<= filter.max_corrupt 0.1)", "filter", _corrupt(1),
         r".*dropped \{'corrupt': 1.*", code=0),
    Case("corrupt_many", "3 of 20 object PNGs empty (0 bytes)", "filter", _corrupt(3),
         P("3/20 object PNGs under data/objects are unreadable or empty (> filter.max_corrupt=0.1); rerun the "
           "generate stage. Examples: [") + ".*images/apple/0.png: not an image file Pillow can read.*"),
    Case("truncated_many", "3 of 20 object PNGs truncated", "filter", _corrupt(3, truncated=True),
         P("3/20 object PNGs under data/objects are unreadable or empty (> filter.max_corrupt=0.1); rerun the "
           "generate stage. Examples: [") + ".*images/apple/0.png: cannot decode the image \\(OSError: .*"),
    Case("manifest_missing", "data/objects/manifest.parquet missing", "filter", lambda ws: write_params(ws),
         P("data/objects/manifest.parquet not found: run the generate stage first (dvc repro generate)")),
    Case("manifest_empty", "data/objects/manifest.parquet 0 bytes", "filter",
         lambda ws: (write_params(ws), (ws / "data/objects").mkdir(parents=True),
                     (ws / "data/objects/manifest.parquet").write_bytes(b"")),
         P("data/objects/manifest.parquet: not a readable Parquet file (") + ".*" + P(")")),
    Case("bg_some", "background folder: 1 of 10 unreadable", "compose", _backgrounds(9, 1),
         r".*skipping 1/10 unreadable background images, e\.g\. bad0\.jpg.*", code=0),
    Case("bg_many", "background folder: 2 of 4 unreadable", "compose", _backgrounds(2, 2),
         P("compose.backgrounds='bg': 2/4 images are unreadable (> compose.max_corrupt=0.1), "
           "e.g. ['bad0.jpg', 'bad1.jpg']")),
    Case("bg_missing", "compose.backgrounds: /nope", "compose",
         lambda ws: (filtered(ws), write_params(ws, compose={"backgrounds": "/nope"})),
         P("compose.backgrounds='/nope': not 'builtin' or 'white' and no such folder")),
    Case("shard", "a damaged composed shard", "train", _shard_damaged,
         P("data/composed/train/part-00000.parquet: not a readable shard (") + ".*"
         + P("); delete it and rerun `dvc repro compose` (the other shards are kept)")),
    Case("eval_trunc_few", "1 of 4 COCO images truncated (eval.max_missing 0.3)", "evaluate",
         _eval(_truncate_images(1), max_missing=0.3), r".*skipped 1 unreadable coco images.*", code=0,
         args=("coco",)),
    Case("eval_trunc_many", "2 of 4 COCO images truncated", "evaluate", _eval(_truncate_images(2)),
         r".*/coco/images/1\.jpg: 2 of 4 coco images cannot be decoded \(truncated or corrupt; eval\.max_missing=0\.01\)",
         args=("coco",)),
    # --- annotations -------------------------------------------------------------------------------
    Case("json_bad", "annotation JSON malformed", "evaluate",
         _eval(lambda ws: (coco(ws), (ws / "coco/ann.json").write_text('{"images": ['))[0]),
         r".*/coco/ann\.json: not valid JSON \(Expecting value: line 1 column 13 \(char 12\)\)", args=("coco",)),
    Case("json_empty", "annotation JSON empty", "evaluate",
         _eval(lambda ws: (coco(ws), (ws / "coco/ann.json").write_text(""))[0]),
         r".*/coco/ann\.json: not valid JSON \(Expecting value: line 1 column 1 \(char 0\)\)", args=("coco",)),
    Case("json_image_ref", "annotation refers to image 99 (not in images)", "evaluate",
         _eval(lambda ws: coco(ws, a=lambda d: d["annotations"][0].update(image_id=99))),
         r".*/coco/ann\.json: annotations\[0\] \(id 11\) refers to image 99, which is not in 'images'",
         args=("coco",)),
    Case("json_files_missing", "2 of 3 image files missing", "evaluate",
         _eval(lambda ws: (lambda r: ([(r[1] / f"{i}.jpg").unlink() for i in (1, 2)], r)[1])(coco(ws))),
         r".*/coco/images: 2 of 3 selected coco images are missing \(first: 1\.jpg; eval\.max_missing=0\.01\)",
         args=("coco",)),
    Case("json_bbox", "bbox [1, 2, 'x', 4]", "evaluate",
         _eval(lambda ws: coco(ws, a=lambda d: d["annotations"][1].update(bbox=[1, 2, "x", 4]))),
         r".*/coco/ann\.json: annotations\[1\] \(id 12\) needs bbox \[x, y, w, h\]", args=("coco",)),
    Case("cat_empty", "category name ' _ '", "evaluate",
         _eval(lambda ws: coco(ws, c=lambda d: d["categories"][0].update(name=" _ "))),
         r".*/coco/ann\.json: categories\[0\] \(id 1\) has an empty name ' _ '", args=("coco",)),
    Case("path_unset", "eval.paths.coco.annotations unset", "evaluate",
         lambda ws: (models(ws), write_params(ws, eval={"datasets": ["coco"]})),
         P("eval.paths.coco.annotations is not set (point it at the local copy; nothing is downloaded)"),
         args=("coco",)),
    Case("xml_bad", "VOC XML malformed", "evaluate", _voc("<annotation><size>"),
         r".*/VOC2007/Annotations/000001\.xml: not valid XML \(no element found: line 1, column 18\)",
         args=("pvoc",)),
    Case("xml_box", "VOC box xmin='nan'", "evaluate",
         _voc("<annotation><size><width>40</width><height>30</height></size><object><name>dog</name>"
              "<bndbox><xmin>nan</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>"),
         r".*/000001\.xml: object 0 \(dog\): needs bndbox xmin/ymin/xmax/ymax numbers", args=("pvoc",)),
    Case("xml_empty", "VOC XML empty", "evaluate", _voc(""),
         r".*/VOC2007/Annotations/000001\.xml: not valid XML \(no element found: line 1, column 0\)",
         args=("pvoc",)),
    Case("refs_empty", "RefCOCO refs pickle empty", "evaluate", _refs(b""),
         r".*/refs\.p: not a readable refs pickle \(EOFError: Ran out of input\)", args=("refcoco",)),
    Case("refs_code", "RefCOCO refs pickle that would import code", "evaluate",
         _refs(b"cos\nsystem\n(S'echo hi'\ntR."),
         r".*/refs\.p: not a readable refs pickle \(UnpicklingError: refuses to load os\.system\)",
         args=("refcoco",)),
    # --- models ------------------------------------------------------------------------------------
    Case("mini_missing", "models/mini_vlm missing (train)", "train", lambda ws: write_params(ws),
         P("mini VLM not found in models/mini_vlm (need mini_vlm.json and model.safetensors); make it with "
           "`dvc repro pretrain_vlm`, or set vlm.path to a folder that stage wrote")),
    Case("pin_missing", "models/pin missing (evaluate)", "evaluate",
         lambda ws: (models(ws), shutil.rmtree(ws / "models/pin"), write_params(ws)),
         P("models/pin: no trained method here (no config.json); train one with `dvc repro train`"),
         args=("synthetic",)),
    # --- issue 24 --------------------------------------------------------------------------------
    Case("section_typo", "params.yaml: `trian:` (misspelled section)", "train",
         _raw_params("trian:\n  steps: 3\n"),
         P("params.yaml: unknown top-level section 'trian' (did you mean 'train'?); known: baselines, compose, "
           "eval, filter, generate, method, pin, pretrain, profile, threads, train, vlm")),
    Case("dup_key", "params.yaml: train.steps given twice", "train",
         _raw_params("train:\n  steps: 3\n  steps: 4\n"),
         P("params.yaml: duplicate key 'steps' at line 3 (first at line 2)")),
    Case("dup_section", "params.yaml: two `compose:` sections", "compose",
         _raw_params("compose: {grid: 8}\ncompose: {grid: 4}\n"),
         P("params.yaml: duplicate key 'compose' at line 2 (first at line 1)")),
    Case("hidden_zero", "-S pin.hidden=[0]", "train", _bad_params(pin={"hidden": [0]}),
         P("pin.hidden: every hidden width must be >= 1 (got [0])")),
    Case("image_size_patch", "-S vlm.image_size=60 (mini VLM patch 8)", "train", _train_ws(vlm={"image_size": 60}),
         P("vlm.image_size=60: must be a multiple of the vision encoder's patch size 8 (e.g. 64)")),
    Case("image_size_small", "-S vlm.image_size=8 (one patch)", "train", _train_ws(vlm={"image_size": 8}),
         P("vlm.image_size=8: too small, at least 2 patches of 8 px a side (>= 16)")),
    Case("image_size_of", "-S vlm.name=openflamingo vlm.image_size=60", "evaluate",
         _bad_params(vlm={"name": "openflamingo", "image_size": 60}),
         P("vlm.image_size: must be a multiple of the openflamingo vision encoder's patch size 14 (got 60)"),
         args=("synthetic",)),
    Case("device_gpu", "-S pretrain.device=gpu", "pretrain_vlm", _bad_params(pretrain={"device": "gpu"}),
         P("pretrain.device: must be cpu, cuda, cuda:N or auto (got 'gpu')")),
    Case("threads_zero", "-S threads=0", "compose", _raw_params("threads: 0\n"),
         P("threads: must be a whole number >= 1 (got 0)")),
    Case("mini_truncated", "models/mini_vlm/model.safetensors truncated (train)", "train", _mini_truncated,
         P("models/mini_vlm/model.safetensors: damaged or truncated weights file (") + ".*"
         + P("); download or save it again")),
    Case("object_png_damaged", "a generated object PNG cut short, generate rerun", "generate", _damaged_object_png,
         r"data/objects/images/[^ ]+\.png: damaged picture \(.+\); delete it and rerun to make it again"),
    Case("bg_truncated_many", "background folder: 3 of 10 JPEGs truncated (header reads)", "compose",
         _truncated_backgrounds(7, 3),
         P("compose.backgrounds='bg': 3/10 images are unreadable (> compose.max_corrupt=0.1), "
           "e.g. ['7.jpg', '8.jpg', '9.jpg']")),
    Case("bg_truncated_few", "background folder: 1 of 10 JPEGs truncated (header reads)", "compose",
         _truncated_backgrounds(9, 1), r".*skipping 1/10 unreadable background images, e\.g\. 9\.jpg.*", code=0),
    Case("shard_reused_truncated", "a truncated composed shard, compose rerun (persisted output)", "compose",
         _truncated_shard, r".*rebuilding data/composed/train/part-00000\.parquet: not a readable shard .*"
         r"shards written 1, reused 1.*", code=0),
    Case("dup_image_id", "COCO file: an image id listed twice", "evaluate", _eval(_dup("image")),
         r".*/coco/ann\.json: images\[2\]: image id 2 is listed twice \(also images\[1\]\)", args=("coco",)),
    Case("dup_ann_id", "COCO file: an annotation id listed twice", "evaluate", _eval(_dup("ann")),
         r".*/coco/ann\.json: annotations\[2\]: annotation id 11 is listed twice \(also annotations\[0\]\)",
         args=("coco",)),
    Case("no_query", "COCO file: every box has no area", "evaluate", _eval(_degenerate),
         P("coco: no query selected from 3 images: 3 have no usable box (boxes skipped: 3 with no area); 0 have "
           "more than eval.max_objects=3 objects; 0 image files are missing"), args=("coco",)),
    Case("refs_split_empty", "RefCOCO: no ref in split testA", "evaluate", _refs_other_split,
         r".*/refs\.p: no ref in split eval\.paths\.refcoco\.split='testA' \(the file's splits: train\)",
         args=("refcoco",)),
    Case("voc_difficult_word", "VOC <difficult>maybe</difficult>", "evaluate", _voc_ok(difficult="maybe"),
         r".*/000001\.xml: object 1 \(cat\): <difficult> must be 0 or 1 \(or yes/no, true/false\), got 'maybe'",
         args=("pvoc",)),
    Case("voc_difficult_yes", "VOC <difficult>yes</difficult>, <width>40.0</width>", "evaluate",
         _voc_ok(width="40.0", difficult="yes"), r".*\[evaluate@pvoc\] done in .*", code=0, args=("pvoc",)),
    Case("voc_split_missing", "VOC folder with only val.txt, eval.paths.pvoc.split=test", "evaluate",
         lambda ws: (_voc_ok(split="val")(ws), write_params(ws, eval={"datasets": ["pvoc"], "paths": {
             **PARAMS["eval"]["paths"], "pvoc": {"root": str(ws / "VOC2007")}}})),
         r".*/ImageSets/Main/test\.txt: file not found \(eval\.paths\.pvoc\.root must be the VOC2007 folder; "
         r"eval\.paths\.pvoc\.split='test', lists here: val\)", args=("pvoc",)),
    Case("voc_split_val", "VOC folder with only val.txt, eval.paths.pvoc.split=val", "evaluate", _voc_ok(split="val"),
         r".*\[evaluate@pvoc\] done in .*", code=0, args=("pvoc",)),
    Case("lvis_v05", "lvis_val_100.json (v0.5 names) with COCO-2017 images", "evaluate", _lvis_v05,
         r".*\[evaluate@lvis\] done in .*", code=0, args=("lvis",)),
]


def snapshot(ws: Path) -> dict[str, bytes]:
    """Every file under ``ws`` (inputs and earlier outputs) with its bytes' hash."""
    import hashlib

    return {p.relative_to(ws).as_posix(): hashlib.sha256(p.read_bytes()).digest()
            for p in sorted(ws.rglob("*")) if p.is_file()}


def check(case: Case, ws: Path) -> str:
    """Run one case; returns the line the user saw. Fails (AssertionError) on a mismatch."""
    case.setup(ws)
    before = snapshot(ws)
    code, lines, out = run_entry(case.stage, ws, *case.args)
    if case.code != 0:  # a refused input changes no file that was there
        after = snapshot(ws)
        assert {k: v for k, v in after.items() if k in before} == before, "an existing output changed"
    label = f"{case.stage}@{case.args[0]}" if case.stage == "evaluate" else case.stage
    assert not any("Traceback" in ln for ln in lines), "\n".join(lines)
    assert code == case.code, (code, lines, out)
    if case.code == 0:
        seen = " ".join(out.split())
        assert re.fullmatch(case.expect, seen), seen
        return next((ln for ln in out.splitlines() if re.fullmatch(case.expect, ln)), out.splitlines()[-1])
    errors = [ln for ln in lines if ln.startswith(f"[{label}] error: ")]
    assert len(errors) == 1 and len(lines) == 1, lines  # one line on stderr, nothing else
    message = errors[0][len(f"[{label}] error: "):]
    assert re.fullmatch(case.expect, message), message
    return errors[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path):
    check(case, tmp_path)


# ------------------------------------------------------------------------------------------------
# the `pin` command (pin.cli.main, in-process)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CliCase:
    id: str
    what: str
    setup: Callable[[Path], list[str]]  # makes the inputs in ws, returns the arguments
    expect: str  # regex the one stderr line must match (code 1), after "error: "
    code: int = 1
    verify: Callable[[Path], None] | None = None  # code 0/3: what the output must be


def _locate(*extra: str, image: str = "photo.jpg", params: str = "p.yaml",
            prepare: Callable[[Path], None] | None = None) -> Callable[[Path], list[str]]:
    def setup(ws: Path) -> list[str]:
        models(ws)
        jpeg(ws / "photo.jpg", (64, 48))
        (ws / "p.yaml").write_text("{}\n")
        if prepare is not None:
            prepare(ws)
        return ["locate", image, "a dog", "--vlm-path", "models/mini_vlm", "--insert", "models/pin",
                "--params", params, "-o", "out.png", *extra]
    return setup


def _png16(ws: Path) -> None:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((48, 64), 90 * 257, np.uint16)).save(ws / "png16.png")


def _grey_picture_drawn(ws: Path) -> None:
    import numpy as np
    from PIL import Image

    arr = np.asarray(Image.open(ws / "out.png").convert("RGB"))
    assert np.median(arr) == 90, "the 16-bit picture was clipped (read as white)"


def _truncate(rel: str, keep: float = 0.5) -> Callable[[Path], None]:
    def edit(ws: Path) -> None:
        raw = (ws / rel).read_bytes()
        (ws / rel).write_bytes(raw[: int(len(raw) * keep)])
    return edit


def _bomb(ws: Path) -> None:
    """A PNG whose header says 20000 x 20000 pixels (400 M): refused before decoding."""
    import struct
    import zlib

    from PIL import Image

    Image.new("L", (8, 8)).save(ws / "bomb.png")
    raw = bytearray((ws / "bomb.png").read_bytes())
    ihdr = bytes(raw[12:16]) + struct.pack(">II", 20000, 20000) + bytes(raw[24:29])
    raw[16:24] = ihdr[4:12]
    raw[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    (ws / "bomb.png").write_bytes(bytes(raw))


def _blip2_folder(ws: Path) -> list[str]:
    from safetensors.torch import save_file

    folder = ws / "blip2"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "blip-2"}')
    save_file({"w": torch.zeros(64)}, str(folder / "model.safetensors"))
    _truncate("blip2/model.safetensors")(ws)
    (ws / "p.yaml").write_text("{}\n")
    return ["check-weights", "--vlm", "blip2", "--blip2-model", "blip2", "--params", "p.yaml"]


def _of_checkpoint(ws: Path) -> list[str]:
    (ws / "lm").mkdir()
    (ws / "lm/config.json").write_text("{}")
    torch.save({"perceiver.latents": torch.zeros(4, 4)}, ws / "checkpoint.pt")
    _truncate("checkpoint.pt")(ws)
    (ws / "p.yaml").write_text("{}\n")
    return ["check-weights", "--vlm", "openflamingo", "--checkpoint", "checkpoint.pt", "--lang-model", "lm",
            "--params", "p.yaml"]


DAMAGED = r"models/{}/model\.safetensors: damaged or truncated weights file \(.+\); download or save it again"
CLI_CASES = [
    CliCase("locate_png16", "pin locate on a 16-bit grey PNG", _locate(image="png16.png", prepare=_png16),
            "", code=-1, verify=_grey_picture_drawn),
    CliCase("locate_params_missing", "pin locate --params FILE that does not exist", _locate(params="nope.yaml"),
            P("nope.yaml: params file not found (--params)")),
    CliCase("locate_params_typo", "pin locate --params with a `trian:` section",
            _locate(prepare=lambda ws: (ws / "p.yaml").write_text("trian: {steps: 1}\n")),
            P("p.yaml: unknown top-level section 'trian' (did you mean 'train'?); known: ") + ".*"),
    CliCase("locate_params_dup", "pin locate --params with a key given twice",
            _locate(prepare=lambda ws: (ws / "p.yaml").write_text("vlm:\n  device: cpu\n  device: cpu\n")),
            P("p.yaml: duplicate key 'device' at line 3 (first at line 2)")),
    CliCase("locate_image_size", "pin locate with vlm.image_size: 60 in --params",
            _locate(prepare=lambda ws: (ws / "p.yaml").write_text("vlm: {image_size: 60}\n")),
            P("vlm.image_size=60: must be a multiple of the vision encoder's patch size 8 (e.g. 64)")),
    CliCase("locate_mini_truncated", "pin locate: the mini VLM's model.safetensors truncated",
            _locate(prepare=_truncate("models/mini_vlm/model.safetensors")), DAMAGED.format("mini_vlm")),
    CliCase("locate_insert_truncated", "pin locate: the insert's model.safetensors truncated",
            _locate(prepare=_truncate("models/pin/model.safetensors")), DAMAGED.format("pin")),
    CliCase("locate_jpeg_truncated", "pin locate on a JPEG cut short",
            _locate(prepare=_truncate("photo.jpg", 0.6)),
            P("photo.jpg: cannot decode the image (OSError: ") + ".*"),
    CliCase("locate_not_image", "pin locate on a text file named .jpg",
            _locate(prepare=lambda ws: (ws / "photo.jpg").write_text("hello")),
            P("photo.jpg: not an image file Pillow can read")),
    CliCase("locate_missing_image", "pin locate on a missing file", _locate(image="none.jpg"),
            P("none.jpg: no such image file")),
    CliCase("locate_bomb", "pin locate on a PNG declaring 20000 x 20000 pixels", _locate(image="bomb.png", prepare=_bomb),
            P("bomb.png: over the 89,478,485-pixel limit (a decompression bomb, or a picture to shrink first; ")
            + ".*"),
    CliCase("locate_empty_query", "pin locate with an empty query",
            lambda ws: [a if a != "a dog" else "  " for a in _locate()(ws)],
            P('the query is empty: say what to look for, e.g. "a dog"')),
    CliCase("info_truncated", "pin info on an insert with truncated weights",
            lambda ws: (models(ws), _truncate("models/pin/model.safetensors")(ws), ["info", "models/pin"])[-1],
            DAMAGED.format("pin")),
    CliCase("similarity_missing", "pin similarity on a folder without an insert",
            lambda ws: ["similarity", "nothing", "-o", "s.png"],
            P("nothing: no trained method here (config.json + model.safetensors). ") + ".*"),
    CliCase("check_params_missing", "pin check-weights --params FILE that does not exist",
            lambda ws: ["check-weights", "--vlm", "blip2", "--params", "nope.yaml"],
            P("nope.yaml: params file not found (--params)")),
    CliCase("check_blip2_truncated", "pin check-weights: a BLIP-2 folder with a truncated model.safetensors",
            _blip2_folder, P("--blip2-model blip2: blip2/model.safetensors: damaged or truncated weights file (")
            + ".*"),
    CliCase("check_of_truncated", "pin check-weights: a truncated OpenFlamingo checkpoint.pt", _of_checkpoint,
            P("checkpoint.pt: damaged or truncated weights file (torch zip checkpoint: ") + ".*"),
]


def check_cli(case: CliCase, ws: Path) -> str:
    """Run one `pin` command in ``ws``; returns the line the user saw."""
    import contextlib
    import os

    from pin.cli import main

    old = os.getcwd()
    os.chdir(ws)
    try:
        argv = case.setup(ws)
        before = snapshot(ws)
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(argv)
    finally:
        os.chdir(old)
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    assert not any("Traceback" in ln for ln in lines), "\n".join(lines)
    if case.code == -1:  # ran: a box (0) or none (3); what it drew is checked
        assert code in (0, 3), (code, lines, out.getvalue())
        case.verify(ws)
        return out.getvalue().splitlines()[-1]
    assert code == case.code, (code, lines, out.getvalue())
    assert snapshot(ws) == before, "an existing file changed"
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert re.fullmatch(case.expect, lines[0][len("error: "):]), lines[0]
    return lines[0]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_bad_input_cli(case: CliCase, tmp_path):
    check_cli(case, tmp_path)


def _raises(err: BaseException) -> Callable[[], None]:
    def main():
        raise err
    return main


@pytest.mark.parametrize("err, line", [
    (KeyError("x"), "unexpected KeyError (a bug? rerun with PIN_DEBUG=1 for the traceback) (KeyError: 'x')"),
    (FileNotFoundError(2, "No such file or directory", "data/x.json"), "data/x.json: No such file or directory"),
    (PermissionError(13, "Permission denied", "models/pin"), "models/pin: Permission denied"),
    (OSError("image file is truncated"), "cannot read or write a file (OSError: image file is truncated)"),
])
def test_stage_error_line_says_where_what_and_why(err, line, capsys, monkeypatch):
    from pin.stage import run_stage

    monkeypatch.delenv("PIN_DEBUG", raising=False)
    with pytest.raises(SystemExit) as stop:
        run_stage("s", _raises(err))
    assert stop.value.code == 1
    assert capsys.readouterr().err.splitlines() == [f"[s] error: {line}"]


def test_library_errors_carry_their_message_and_file(tmp_path, capsys, monkeypatch):
    """Pillow and pyarrow quote the file in their message; the line starts with it."""
    import pyarrow.parquet as pq
    from PIL import Image

    from pin.stage import run_stage

    monkeypatch.delenv("PIN_DEBUG", raising=False)
    (tmp_path / "a.png").write_bytes(b"no picture")
    (tmp_path / "b.parquet").write_bytes(b"PAR1 no footer")
    for main, what in ((lambda: Image.open(tmp_path / "a.png"), "not an image file Pillow can read "
                        "(UnidentifiedImageError: cannot identify image file"),
                       (lambda: pq.read_table(tmp_path / "b.parquet"), "not a readable Parquet/Arrow file "
                        "(ArrowInvalid: ")):
        with pytest.raises(SystemExit):
            run_stage("s", main)
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith(f"[s] error: {tmp_path}/"), err
        assert what in err[0]


def test_pin_debug_shows_the_traceback(capsys, monkeypatch):
    from pin.stage import run_stage

    monkeypatch.setenv("PIN_DEBUG", "1")
    with pytest.raises(SystemExit):
        run_stage("s", _raises(KeyError("x")))
    err = capsys.readouterr().err
    assert err.startswith("[s] error: unexpected KeyError") and "Traceback (most recent call last)" in err


if __name__ == "__main__":
    import tempfile

    print("| bad input | stage | what the user sees | exit |")
    print("|---|---|---|---|")
    for case in CASES:
        with tempfile.TemporaryDirectory() as d:
            try:
                line = check(case, Path(d))
            except AssertionError as err:
                line = f"MISMATCH: {err}"
        line = line.replace(d, "<tmp>").replace("|", "\\|")
        print(f"| {case.what} | {case.stage} | `` {line} `` | {case.code} |")
    for cli in CLI_CASES:
        with tempfile.TemporaryDirectory() as d:
            try:
                line = check_cli(cli, Path(d))
            except AssertionError as err:
                line = f"MISMATCH: {err}"
        line = line.replace(d, "<tmp>").replace("|", "\\|")
        print(f"| {cli.what} | pin | `` {line} `` | {'0/3' if cli.code == -1 else cli.code} |")
