"""`pin check-weights` on tiny models saved to disk in the paper profile's formats: it prints the
per-component sizes and a fixed-input fingerprint that is the same on every run, and a missing or
malformed file exits 1 with a message naming the flag to fix."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

torch.set_num_threads(1)

from test_blip2 import tiny_blip2  # noqa: E402
from tiny_of import CLIP_NAME, build_flamingo, released_state_dict, write_clip, write_llama  # noqa: E402

from pin.check_weights import probe_image  # noqa: E402
from pin.cli import app  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def of_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("check_of")
    clip = write_clip(root)
    write_llama(root / "lm")
    flamingo = build_flamingo(root / "lm", clip)
    torch.save(released_state_dict(flamingo), root / "checkpoint.pt")
    # a params.yaml next to the files, with relative paths (read from its folder)
    (root / "params.yaml").write_text(
        f"vlm:\n  name: mini\n  checkpoint: checkpoint.pt\n  lang_model: lm\n  clip_model: {CLIP_NAME}\n"
        f"  clip_pretrained: {clip}\nfilter:\n  model: {CLIP_NAME}\n")
    return root, flamingo


@pytest.fixture(scope="module")
def blip2_dir(tmp_path_factory, make_char_tokenizer):
    folder = tmp_path_factory.mktemp("check_blip2") / "blip2"
    for part in tiny_blip2(make_char_tokenizer):
        part.save_pretrained(folder)
    return folder


def run(*args):
    """Exit code and stdout (on success) or stdout + stderr (on an error)."""
    result = runner.invoke(app, ["check-weights", *map(str, args)])
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def test_openflamingo_prints_sizes_and_a_stable_checksum(of_files, tmp_path, monkeypatch):
    root, flamingo = of_files
    monkeypatch.chdir(tmp_path)  # paths come from the params file, relative to its folder
    code, out = run("--vlm", "openflamingo", "--params", root / "params.yaml", "--json")
    assert code == 0, out
    report = json.loads(out)
    sizes = {c["name"]: c["parameters"] for c in report["components"]}
    assert sizes["vision encoder"] == sum(p.numel() for p in flamingo.vision_encoder.parameters())
    xattn = sum(p.numel() for p in flamingo.lang_encoder.gated_cross_attn_layers.parameters())
    assert sizes["fusion"] == sum(p.numel() for p in flamingo.perceiver.parameters()) + xattn
    # the LM without the cross-attention blocks, its tied head counted once
    assert sizes["language model"] == sum(p.numel() for p in flamingo.lang_encoder.parameters()) - xattn
    assert all(c["dtypes"] == ["float32"] for c in report["components"])
    assert report["prompt"] == "<image>In the image is a dog located at"
    assert len(report["logit_head"]) == 5 and report["logit_sum"] != 0
    again = json.loads(run("--vlm", "openflamingo", "--params", root / "params.yaml", "--json")[1])
    assert again == report
    # flags override the params file, and the text output carries the same numbers
    (tmp_path / "empty.yaml").write_text("{}\n")
    code, text = run("--vlm", "openflamingo", "--params", tmp_path / "empty.yaml", "--checkpoint", root / "checkpoint.pt",
                     "--lang-model", root / "lm", "--clip-model", CLIP_NAME, "--clip-pretrained", root / "clip/weights.pt")
    assert code == 0, text
    assert f"sum {report['logit_sum']:.4f}" in text and f"{sizes['fusion']:,} parameters" in text
    assert f"greedy answer: {report['answer']!r}" in text


def test_the_checksum_reads_the_checkpoint(of_files, tmp_path):
    """Other fusion weights in the checkpoint give another fingerprint."""
    root, flamingo = of_files
    state = released_state_dict(flamingo)
    g = torch.Generator().manual_seed(4)  # not a constant shift: the perceiver normalises it away
    state["perceiver.latents"] = state["perceiver.latents"] + torch.randn(state["perceiver.latents"].shape, generator=g)
    torch.save({"model_state_dict": state}, tmp_path / "other.pt")
    base = json.loads(run("--vlm", "openflamingo", "--params", root / "params.yaml", "--json")[1])
    other = json.loads(run("--vlm", "openflamingo", "--params", root / "params.yaml", "--checkpoint",
                           tmp_path / "other.pt", "--json")[1])
    assert other["components"] == base["components"] and other["logit_sum"] != base["logit_sum"]


def test_missing_or_malformed_files_exit_1_naming_the_flag(of_files, tmp_path):
    root, flamingo = of_files
    params = ("--params", root / "params.yaml")
    code, out = run("--vlm", "openflamingo", *params, "--checkpoint", tmp_path / "absent.pt")
    assert code == 1 and "--checkpoint" in out and "absent.pt" in out and "no such file" in out
    code, out = run("--vlm", "openflamingo", "--params", tmp_path / "none.yaml")
    assert code == 1 and out.strip() == f"error: {tmp_path / 'none.yaml'}: params file not found (--params)"
    (tmp_path / "none.yaml").write_text("{}\n")  # a params file without sections
    code, out = run("--vlm", "openflamingo", "--params", tmp_path / "none.yaml")  # the defaults: hub ids
    assert code == 1 and "--checkpoint openflamingo/OpenFlamingo-3B-vitl-mpt1b-langinstruct" in out
    assert "default vlm.checkpoint" in out
    code, out = run("--vlm", "openflamingo", *params, "--lang-model", tmp_path)
    assert code == 1 and "--lang-model" in out and "config.json" in out
    code, out = run("--vlm", "openflamingo", *params, "--clip-pretrained", tmp_path / "no.pt")
    assert code == 1 and "--clip-pretrained" in out
    no_perceiver = {k: v for k, v in released_state_dict(flamingo).items() if not k.startswith("perceiver.")}
    torch.save(no_perceiver, tmp_path / "partial.pt")
    code, out = run("--vlm", "openflamingo", *params, "--checkpoint", tmp_path / "partial.pt")
    assert code == 1 and "fusion weights missing" in out
    code, out = run("--vlm", "blip2", *params, "--blip2-model", tmp_path / "no_blip2")
    assert code == 1 and "--blip2-model" in out
    code, out = run("--vlm", "mini", *params)
    assert code == 2 and "'mini' is not one of" in out  # a choice of the option: bad usage


def test_blip2_prints_its_three_parts(blip2_dir, tmp_path):
    (tmp_path / "none.yaml").write_text("{}\n")  # a params file without sections: the defaults
    code, out = run("--vlm", "blip2", "--blip2-model", blip2_dir, "--params", tmp_path / "none.yaml", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert [c["name"] for c in report["components"]] == ["vision encoder", "Q-Former", "language model"]
    assert all(c["parameters"] > 0 for c in report["components"])
    assert report["prompt"] == "In the image is a dog located at"
    again = json.loads(run("--vlm", "blip2", "--blip2-model", blip2_dir, "--params", tmp_path / "none.yaml",
                           "--json")[1])
    assert again == report


def test_filter_clip_weights_are_counted_apart(of_files):
    root, _ = of_files
    code, out = run("--vlm", "openflamingo", "--params", root / "params.yaml", "--clip", root / "clip/weights.pt")
    assert code == 0, out
    assert "other weights" in out and f"clip {CLIP_NAME} vision" in out and f"clip {CLIP_NAME} text" in out
    code, out = run("--vlm", "openflamingo", "--params", root / "params.yaml", "--clip", root / "missing.pt")
    assert code == 1 and "--clip" in out


def test_stable_diffusion_folder_is_counted_apart(of_files, tmp_path):
    from rehearsal.standins import write_stable_diffusion

    sd = write_stable_diffusion(tmp_path / "sd")
    root, _ = of_files
    code, out = run("--vlm", "openflamingo", "--params", root / "params.yaml", "--diffusers", sd, "--json")
    assert code == 0, out
    extras = {c["name"]: c["parameters"] for c in json.loads(out)["extras"]}
    assert set(extras) == {"diffusers unet", "diffusers vae", "diffusers text_encoder"}
    assert all(n > 0 for n in extras.values())
    code, out = run("--vlm", "openflamingo", "--params", root / "params.yaml", "--diffusers", tmp_path / "no_sd")
    assert code == 1 and "--diffusers" in out


def test_probe_image_is_fixed():
    a, b = probe_image(), probe_image()
    assert a.size == (224, 224) and a.tobytes() == b.tobytes()
    pixels = np.asarray(a).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 100  # not a flat picture: the encoder sees structure
