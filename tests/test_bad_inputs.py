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
]


def check(case: Case, ws: Path) -> str:
    """Run one case; returns the line the user saw. Fails (AssertionError) on a mismatch."""
    case.setup(ws)
    code, lines, out = run_entry(case.stage, ws, *case.args)
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
