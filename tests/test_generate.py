"""The generate stage: openmoji end to end, determinism, resume, multi-process split, and the
diffusers backend through a tiny random-weight Stable Diffusion pipeline."""
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from pin.errors import PinError
from pin.params import GenerateParams
from pin.synth.foreground import threshold_foreground
from pin.synth.backend import Rendered
from pin.synth.generate import MANIFEST, MANIFEST_COLUMNS, run_generate, sample_seed

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(backend="openmoji", max_categories=2, per_category=3, image_size=64)


def _pngs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


@pytest.fixture(scope="module")
def moji_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("moji") / "objects"
    result = run_generate(GenerateParams(**SMALL), out, progress=False)
    return out, result


def test_openmoji_end_to_end(moji_run):
    out, result = moji_run
    df = pd.read_parquet(out / MANIFEST)
    assert list(df.columns) == MANIFEST_COLUMNS
    assert len(df) == 12 and result.images == 12 and result.made == 12
    assert result.categories == {"train": 2, "heldout": 2}
    assert df.groupby("split")["category"].nunique().to_dict() == {"heldout": 2, "train": 2}
    assert sorted(df["index"].unique()) == [0, 1, 2]
    assert (df["backend"] == "openmoji").all() and df["prompt"].str.match(r"openmoji:[0-9A-F-]+ \S").all()
    assert df["category"].iloc[0] == "airplane" and df["prompt"].iloc[0] == "openmoji:2708 airplane"
    for row in df.itertuples():
        with Image.open(out / row.path) as im:
            assert im.mode == "RGBA" and im.size == (row.width, row.height)
            a = np.asarray(im)[..., 3]
        assert a.max() == 255
        assert a[0].any() and a[-1].any() and a[:, 0].any() and a[:, -1].any()  # cropped tight
        assert 0 < row.mask_area_frac < 1
        assert row.mask_area_frac == pytest.approx((a > 0).sum() / 64**2)
        assert row.seed == sample_seed(0, row.category, row.index)
    assert "train + " in result.summary() and "12 images" in result.summary()


def test_deterministic(moji_run, tmp_path):
    out, _ = moji_run
    run_generate(GenerateParams(**SMALL), tmp_path / "again", progress=False)
    assert _pngs(tmp_path / "again") == _pngs(out)
    a = pd.read_parquet(out / MANIFEST)
    b = pd.read_parquet(tmp_path / "again" / MANIFEST)
    pd.testing.assert_frame_equal(a, b)


def test_resume_and_config_change(moji_run, tmp_path):
    ref, _ = moji_run
    out = tmp_path / "objects"
    run_generate(GenerateParams(**SMALL), out, progress=False)
    victim = sorted(out.rglob("*.png"))[4]
    victim.unlink()
    (out / MANIFEST).unlink()
    r = run_generate(GenerateParams(**SMALL), out, progress=False)
    assert (r.made, r.reused) == (1, 11)
    assert _pngs(out) == _pngs(ref)
    assert len(pd.read_parquet(out / MANIFEST)) == 12

    # other params: the old pictures are discarded, never mixed in
    (out / "images" / "stray.png").write_bytes(b"x")
    r = run_generate(GenerateParams(**{**SMALL, "seed": 1}), out, progress=False)
    assert (r.made, r.reused) == (12, 0)
    assert not (out / "images" / "stray.png").exists()
    assert _pngs(out).keys() == _pngs(ref).keys() and _pngs(out) != _pngs(ref)
    cfg = json.loads((out / "_config.json").read_text())
    assert cfg["config"]["params"]["seed"] == 1


class _FakeState:
    def __init__(self, index, n, on_wait=None):
        self.process_index, self.num_processes = index, n
        self.is_main_process = index == 0
        self.device = None
        self.on_wait = on_wait
        self.log = []

    def wait_for_everyone(self):
        if self.on_wait:
            self.on_wait()
            self.on_wait = None

    def gather_object(self, obj):
        return obj + [(0, 0, 0)]


def test_processes_split_categories(moji_run, tmp_path):
    """Two processes (simulated in turn) make exactly what one process makes."""
    ref, _ = moji_run
    out = tmp_path / "objects"
    params = GenerateParams(**SMALL)
    seen = {}

    def second_process():  # runs once the main process has prepared the folder
        seen["r1"] = run_generate(params, out, progress=False, state=_FakeState(1, 2))

    r0 = run_generate(params, out, progress=False, state=_FakeState(0, 2, on_wait=second_process))
    assert seen["r1"].made == 6 and seen["r1"].manifest is None  # only the main process writes it
    assert r0.images == 12
    assert _pngs(out) == _pngs(ref)
    pd.testing.assert_frame_equal(pd.read_parquet(out / MANIFEST), pd.read_parquet(ref / MANIFEST))


def test_nothing_to_make(tmp_path):
    class NoneCovered:
        name, batch_size = "none", 1

        def covers(self, c):
            return False

    with pytest.raises(PinError, match="no category"):
        run_generate(GenerateParams(**SMALL), tmp_path / "o", backend=NoneCovered(), progress=False)


def test_stage_entry_point(tmp_path, monkeypatch, capsys):
    (tmp_path / "params.yaml").write_text(
        "generate:\n  backend: openmoji\n  category_set: pvoc\n  max_categories: 1\n  per_category: 2\n"
        "  image_size: 48\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stages/generate.py"])
    runpy.run_path(str(ROOT / "stages" / "generate.py"), run_name="__main__")
    outp = capsys.readouterr().out
    assert "[generate] done" in outp and "1 heldout" in outp and "2 images" in outp
    df = pd.read_parquet(tmp_path / "data" / "objects" / MANIFEST)
    assert df["category"].tolist() == ["aeroplane", "aeroplane"] and (df["split"] == "heldout").all()

    (tmp_path / "params.yaml").write_text("generate:\n  per_category: 0\n")
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(ROOT / "stages" / "generate.py"), run_name="__main__")
    assert exc.value.code == 1 and "generate.per_category" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# foreground extraction
# ---------------------------------------------------------------------------------------------
def test_threshold_foreground_cuts_out_a_disc():
    im = Image.new("RGB", (96, 80), "white")
    ImageDraw.Draw(im).ellipse((20, 15, 59, 54), fill=(220, 30, 30))  # 40 px disc
    im.putpixel((90, 5), (0, 0, 0))  # a speck far away is dropped
    cut = threshold_foreground(im)
    assert cut is not None and cut.mode == "RGBA"
    assert cut.size == (40, 40)
    a = np.asarray(cut)
    assert a[20, 20, 3] == 255 and tuple(a[20, 20, :3]) == (220, 30, 30)
    assert a[0, 0, 3] == 0 and a[-1, -1, 3] == 0  # corners of the box lie outside the disc
    r = Rendered.from_cutout(cut, 96 * 80)
    assert r.mask_area_frac == pytest.approx(np.pi * 20**2 / (96 * 80), rel=0.08)
    assert threshold_foreground(Image.new("RGB", (64, 64), "white")) is None


def test_threshold_foreground_keeps_white_inside_the_object():
    im = Image.new("RGB", (64, 64), "white")
    d = ImageDraw.Draw(im)
    d.rectangle((10, 10, 49, 49), fill=(0, 0, 200))
    d.rectangle((20, 20, 39, 39), fill=(255, 255, 255))  # a white window in a blue frame
    a = np.asarray(threshold_foreground(im))
    assert a.shape[:2] == (40, 40) and (a[..., 3] == 255).all()


# ---------------------------------------------------------------------------------------------
# diffusers backend with a tiny random pipeline
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32)
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    text = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=100, max_position_embeddings=77))
    d = tmp_path_factory.mktemp("tok")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz,":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=77)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tok, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return pipe


def _accept_centre(img):
    """Stand-in extractor for noise pictures: the centre half of the picture is 'the object'."""
    rgba = img.convert("RGBA")
    a = np.zeros((img.height, img.width), np.uint8)
    a[img.height // 4: 3 * img.height // 4, img.width // 4: 3 * img.width // 4] = 255
    rgba.putalpha(Image.fromarray(a))
    return rgba


DIFF = dict(backend="diffusers", category_set="pvoc", max_categories=2, per_category=3, image_size=16,
            steps=2, batch_size=2, prompt="a photo of a single {name}, white background")


def test_diffusers_backend_end_to_end(tiny_pipe, tmp_path):
    from pin.synth.diffusers_backend import DiffusersGenerator

    params = GenerateParams(**DIFF)
    gen = DiffusersGenerator(params, pipe=tiny_pipe, foreground=_accept_centre)
    out = tmp_path / "objects"
    r = run_generate(params, out, backend=gen, progress=False)
    df = pd.read_parquet(out / MANIFEST)
    assert r.made == 6 and len(df) == 6 and r.categories == {"heldout": 2}
    # VOC "aeroplane" is prompted as captions say it (pin.categories.query_name)
    assert df["prompt"].tolist()[:3] == ["a photo of a single airplane, white background"] * 3
    assert (df["backend"] == "diffusers").all()
    assert (df[["width", "height"]] == 8).all().all() and np.allclose(df["mask_area_frac"], 0.25)
    for p in df["path"]:
        with Image.open(out / p) as im:
            assert im.mode == "RGBA"
    before = _pngs(out)

    # resume: a missing picture is remade in its original batch, so its bytes are the same
    victim = out / df["path"].iloc[1]
    victim.unlink()
    r = run_generate(params, out, backend=gen, progress=False)
    assert (r.made, r.reused) == (1, 5) and _pngs(out) == before


def test_diffusers_rejected_pictures_are_counted(tiny_pipe, tmp_path):
    from pin.synth.diffusers_backend import DiffusersGenerator

    calls = []

    def reject(img):
        calls.append(img.size)
        return None

    params = GenerateParams(**{**DIFF, "max_categories": 1, "per_category": 2})
    gen = DiffusersGenerator(params, pipe=tiny_pipe, foreground=reject)
    r = run_generate(params, tmp_path / "o", backend=gen, progress=False)
    assert (r.images, r.skipped, len(calls)) == (0, 2, 2)
    assert "2 rejected by the foreground extractor" in r.summary()
    r = run_generate(params, tmp_path / "o", backend=gen, progress=False)  # not retried on resume
    assert (r.skipped, r.reused, len(calls)) == (2, 2, 2)


def test_diffusers_missing_weights_name_the_model(tmp_path):
    from pin.synth.diffusers_backend import DiffusersGenerator

    empty = tmp_path / "no-weights-here"
    empty.mkdir()
    with pytest.raises(PinError, match="no-weights-here.*generate.model.*HF_HUB_OFFLINE"):
        DiffusersGenerator(GenerateParams(backend="diffusers", model=str(empty)), device="cpu")
    with pytest.raises(PinError, match="multiple of 8"):
        DiffusersGenerator(GenerateParams(backend="diffusers", image_size=100), pipe=object())
