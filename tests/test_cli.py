"""The `pin` command: locate on pictures of any size (boxes mapped back to their pixels), info,
similarity, and clear errors when the models are missing."""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

torch.set_num_threads(1)

from pin import locate as loc  # noqa: E402
from pin.cli import app, main  # noqa: E402
from pin.errors import PinError  # noqa: E402
from pin.insert import InsertConfig, PositionalInsert  # noqa: E402
from pin.vlm.mini import MiniVLMConfig, build_mini_flamingo, load_mini, save_mini  # noqa: E402
from pin.vlm.openflamingo import OpenFlamingoAdapter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = MiniVLMConfig(vision_width=32, vision_layers=1, vision_heads=2, lm_width=32, lm_layers=2, lm_heads=2,
                     perceiver_depth=1, perceiver_latents=8, perceiver_heads=2, perceiver_dim_head=16,
                     xattn_heads=2, xattn_dim_head=16, gate_init=1.0)
runner = CliRunner()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny saved mini VLM and a matching (untrained) insert, laid out like the pipeline's."""
    root = tmp_path_factory.mktemp("models")
    flamingo, _, tok = build_mini_flamingo(TINY, ["dog", "cup"])
    save_mini(root / "mini_vlm", flamingo, tok, TINY)
    site = load_mini(root / "mini_vlm").site
    torch.manual_seed(0)
    PositionalInsert(InsertConfig.for_site(site, layers=1, hidden=(16,))).save_pretrained(root / "pin")
    (root / "no-params.yaml").write_text("{}\n")  # a params file with no sections: built-in defaults
    return root


@pytest.fixture()
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (640, 360), (30, 120, 200)).save(path)
    return path


def _args(models, *extra):
    return ["--vlm-path", str(models / "mini_vlm"), "--insert", str(models / "pin"), "--params",
            str(models / "no-params.yaml"), *extra]


# ----------------------------------------------------------------------------- framing
@settings(max_examples=60, deadline=None)
@given(w=st.integers(1, 3000), h=st.integers(1, 3000), fit=st.sampled_from(["resize", "letterbox"]))
def test_framing_maps_the_picture_onto_the_frame_and_back(w, h, fit):
    framed, f = loc.frame_image(Image.new("RGB", (min(w, 64), min(h, 64))), fit)
    assert framed.size == (loc.FRAME, loc.FRAME)
    f = loc.Framing((w, h), *_framing_for(w, h, fit))
    # the picture's area inside the frame maps back to the whole picture
    (sx, sy), (ox, oy) = f.scale, f.offset
    back = f.to_picture((ox, oy, ox + w * sx, oy + h * sy))
    assert back == pytest.approx((0, 0, w, h), abs=1e-6 * max(w, h))
    # the whole frame never maps outside the picture
    x1, y1, x2, y2 = f.to_picture((0, 0, loc.FRAME, loc.FRAME))
    assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h


def _framing_for(w, h, fit):
    """The Framing frame_image computes, without building a huge picture."""
    if fit == "resize":
        return (loc.FRAME / w, loc.FRAME / h), (0.0, 0.0)
    s = loc.FRAME / max(w, h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    return (nw / w, nh / h), (float((loc.FRAME - nw) // 2), float((loc.FRAME - nh) // 2))


def test_frame_image_letterbox_pads_and_keeps_aspect():
    im = Image.new("RGB", (400, 100), (255, 0, 0))
    framed, f = loc.frame_image(im, "letterbox")
    assert f.scale == (pytest.approx(224 / 400), pytest.approx(224 / 400)) and f.offset == (0.0, 84.0)
    assert framed.getpixel((112, 10)) == loc.PAD_COLOUR and framed.getpixel((112, 112)) == (255, 0, 0)
    with pytest.raises(PinError, match="fit"):
        loc.frame_image(im, "crop")


def test_object_name_drops_the_article():
    assert loc.object_name("a dog") == "dog"
    assert loc.object_name("  An   old  car ") == "old car"
    assert loc.object_name("the red apple") == "red apple"
    assert loc.object_name("apple") == "apple"
    with pytest.raises(PinError, match="empty"):
        loc.object_name("   ")


class FakeVLM:
    """Answers a fixed text; records what it was asked."""

    name = "fake"

    def __init__(self, answer):
        self.answer, self.prompts, self.sizes = answer, [], []

    def preprocess(self, images):
        self.sizes += [im.size for im in images]
        return torch.zeros(len(images), 3, 8, 8)

    def patch_features(self, pixels):
        return torch.zeros(len(pixels), 4, 2)

    def prompt(self, obj):
        return f"<image>In the image is a {obj} located at"

    def generate(self, feats, prompts, insert=None, max_new_tokens=24, num_beams=1):
        self.prompts += prompts
        return [self.answer] * len(prompts)


@pytest.mark.parametrize("fit, want", [
    ("resize", (800 * 28 / 224, 400 * 56 / 224, 800 * 112 / 224, 400 * 168 / 224)),
    # letterbox: scale 224/800, picture 224 x 112 at y offset 56
    ("letterbox", (28 * 800 / 224, 0.0, 112 * 800 / 224, (168 - 56) * 800 / 224)),
])
def test_locate_maps_the_answer_back_to_picture_pixels(fit, want):
    vlm = FakeVLM(" [28,56,112,168]")
    r = loc.locate(vlm, None, Image.new("RGB", (800, 400)), "a dog", grid=8, fit=fit)
    assert vlm.sizes == [(224, 224)] and vlm.prompts == ["<image>In the image is a dog located at"]
    assert r.frame_box == (28, 56, 112, 168)
    assert r.box == pytest.approx(want)
    assert loc.draw_box(Image.new("RGB", (800, 400)), r).size == (800, 400)


def test_locate_unparsable_answer():
    r = loc.locate(FakeVLM(" a dog"), None, Image.new("RGB", (50, 70)), "dog", grid=8)
    assert r.box is None and r.frame_box is None and r.to_dict()["box"] is None
    assert loc.draw_box(Image.new("RGB", (50, 70)), r).size == (50, 70)


def test_open_image_applies_exif_orientation(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (300, 200)).save(path, exif=exif)
    assert loc.open_image(path).size == (200, 300)
    with pytest.raises(PinError, match="no such image"):
        loc.open_image(tmp_path / "nope.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(PinError, match="bad.jpg: not an image file"):
        loc.open_image(tmp_path / "bad.jpg")


# ----------------------------------------------------------------------------- the command
def test_locate_command_prints_the_box_in_picture_pixels(models, photo, tmp_path, monkeypatch):
    monkeypatch.setattr(OpenFlamingoAdapter, "generate", lambda self, *a, **k: [" [56,0,224,112]"])
    out = tmp_path / "boxed.png"
    res = runner.invoke(app, ["locate", str(photo), "a dog", "-o", str(out), *_args(models)])
    assert res.exit_code == 0, res.output
    assert "a dog: [160, 0, 640, 180]" in res.output and "640x360" in res.output
    assert Image.open(out).size == (640, 360)
    # the box is drawn in red on the photo's own pixels
    assert Image.open(out).convert("RGB").getpixel((400, 1))[0] > 200

    res = runner.invoke(app, ["locate", str(photo), "a dog", "--json", "--fit", "letterbox", "-o", str(out),
                              *_args(models)])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert got["box"] == [160.0, 0.0, 640.0, 180.0]  # (112 - 49) / 0.35 and got["fit"] == "letterbox" and got["grid"] == 8


def test_locate_command_runs_the_real_tiny_model(models, photo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["locate", str(photo), "a dog", *_args(models)])
    # a random model rarely answers a box: either way the command reports and writes the picture
    assert res.exit_code in (0, 3), res.output
    assert (tmp_path / "photo_located.png").is_file() and "wrote photo_located.png" in res.output
    res = runner.invoke(app, ["locate", str(photo), "cup", "--no-insert", "--json", *_args(models)])
    assert res.exit_code in (0, 3) and json.loads(res.output)["insert"] is None


def test_locate_command_errors_say_what_to_do(models, photo, tmp_path):
    res = runner.invoke(app, ["locate", str(photo), "a dog", "--vlm-path", str(tmp_path / "none"),
                              "--params", str(models / "no-params.yaml")])
    assert res.exit_code == 1 and "dvc repro" in res.output
    res = runner.invoke(app, ["locate", str(photo), "a dog", "--vlm-path", str(models / "mini_vlm"),
                              "--insert", str(tmp_path / "none"), "--params", str(models / "no-params.yaml")])
    assert res.exit_code == 1 and "dvc repro train" in res.output and "--no-insert" in res.output
    wrong = tmp_path / "wrong_pin"
    PositionalInsert(InsertConfig(n_positions=256, width=1024, layers=1, hidden=(8,))).save_pretrained(wrong)
    res = runner.invoke(app, ["locate", str(photo), "a dog", "--vlm-path", str(models / "mini_vlm"),
                              "--insert", str(wrong), "--params", str(models / "no-params.yaml")])
    assert res.exit_code == 1 and "256 positions" in res.output
    res = runner.invoke(app, ["locate", str(tmp_path / "missing.jpg"), "a dog", *_args(models)])
    assert res.exit_code == 1 and "no such image" in res.output
    res = runner.invoke(app, ["locate", str(photo), "a dog", "--model", "gpt", *_args(models)])
    assert res.exit_code == 2
    res = runner.invoke(app, ["locate", str(photo), "a dog", "--model", "blip2", "--vlm-path",
                              str(tmp_path / "no_blip2"), "--insert", str(models / "pin")])
    assert res.exit_code == 1 and "error:" in res.output


def test_grid_comes_from_params_when_the_model_matches(tmp_path):
    from pin.cli import _vlm_settings

    params = tmp_path / "params.yaml"
    params.write_text("vlm: {name: mini, path: elsewhere}\ncompose: {grid: 14}\n")
    vlm_p, grid = _vlm_settings("mini", None, params, "cpu", None)
    assert (vlm_p.path, grid) == ("elsewhere", 14)
    assert _vlm_settings("openflamingo", None, params, "cpu", None)[1] == 16
    (tmp_path / "empty.yaml").write_text("{}\n")
    assert _vlm_settings("mini", tmp_path / "m", tmp_path / "empty.yaml", "cpu", None)[1] == 8
    with pytest.raises(PinError, match=r"none\.yaml: params file not found \(--params\)"):
        _vlm_settings("mini", tmp_path / "m", tmp_path / "none.yaml", "cpu", None)
    assert _vlm_settings("mini", None, params, "cpu", 4)[1] == 4


def test_info_and_similarity(models, tmp_path):
    res = runner.invoke(app, ["info", str(models / "pin")])
    assert res.exit_code == 0, res.output
    n = sum(p.numel() for p in PositionalInsert.from_pretrained(models / "pin").parameters())
    assert f"parameters: {n:,}" in res.output and "8x8 patches" in res.output and "layout: swiglu" in res.output
    got = json.loads(runner.invoke(app, ["info", str(models / "pin"), "--json"]).output)
    assert got["config"]["n_positions"] == 64 and got["bytes"] > 0
    res = runner.invoke(app, ["info", str(models / "mini_vlm")])
    assert res.exit_code == 0 and "mini VLM" in res.output
    res = runner.invoke(app, ["info", str(tmp_path)])
    assert res.exit_code == 1 and "no trained method" in res.output and "pin info FOLDER" in res.output

    out = tmp_path / "sim.png"
    res = runner.invoke(app, ["similarity", str(models / "pin"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert Image.open(out).size[0] > 600 and "neighbours" in res.output


def test_main_returns_exit_codes(models):
    assert main(["info", str(models / "pin")]) == 0
    assert main(["info", "/nonexistent/pin"]) == 1
    assert main(["--help"]) == 0


def test_console_script_is_declared_and_runs_as_a_module():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["pin"] == "pin.cli:main"
    out = subprocess.run([sys.executable, "-m", "pin.cli", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "locate" in out.stdout and "info" in out.stdout


# ----------------------------------------------------------------------------- words and grids
def test_locate_warns_about_query_words_the_mini_vlm_never_saw(models, photo, tmp_path, monkeypatch):
    monkeypatch.setattr(OpenFlamingoAdapter, "generate", lambda self, *a, **k: [" [56,0,224,112]"])
    out = str(tmp_path / "o.png")
    res = runner.invoke(app, ["locate", str(photo), "a cat", "-o", out, *_args(models)])
    assert res.exit_code == 0, res.output
    assert "warning: the mini VLM has never seen the word 'cat'" in res.output
    assert f"pin info {models / 'mini_vlm'}" in res.output  # where the known categories are listed
    res = runner.invoke(app, ["locate", str(photo), "a dog", "-o", out, *_args(models)])
    assert "never seen" not in res.output
    got = json.loads(runner.invoke(app, ["locate", str(photo), "cat", "--json", "-o", out, *_args(models)]).output)
    assert any("'cat'" in w for w in got["warnings"])


def test_locate_takes_the_grid_recorded_with_the_insert(models, photo, tmp_path, monkeypatch):
    monkeypatch.setattr(OpenFlamingoAdapter, "generate", lambda self, *a, **k: [" [56,0,224,112]"])
    module = PositionalInsert.from_pretrained(models / "pin")
    module.save_pretrained(tmp_path / "pin4", grid=4)
    args = ["--vlm-path", str(models / "mini_vlm"), "--params", str(models / "no-params.yaml"), "-o",
            str(tmp_path / "o.png"), "--json"]
    got = json.loads(runner.invoke(app, ["locate", str(photo), "dog", "--insert", str(tmp_path / "pin4"),
                                         *args]).output)
    assert got["grid"] == 4 and "warnings" not in got
    given = runner.invoke(app, ["locate", str(photo), "dog", "--insert", str(tmp_path / "pin4"), "--grid", "2", *args])
    assert json.loads(given.output)["grid"] == 2  # --grid still wins
    # an insert saved before the grid was recorded: the old fallback, said out loud
    old = json.loads(runner.invoke(app, ["locate", str(photo), "dog", "--insert", str(models / "pin"), *args]).output)
    assert old["grid"] == 8 and "records no box grid" in old["warnings"][0]


def test_info_lists_the_categories_a_mini_vlm_knows(tmp_path):
    flamingo, _, tok = build_mini_flamingo(TINY, ["dog", "cup"])
    save_mini(tmp_path / "mini_vlm", flamingo, tok, TINY, meta={"vocabulary": ["cup", "dog"]})
    res = runner.invoke(app, ["info", str(tmp_path / "mini_vlm")])
    assert res.exit_code == 0 and "knows 2 categories: cup, dog" in res.output
