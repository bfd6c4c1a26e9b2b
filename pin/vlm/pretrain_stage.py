"""The pretrain_vlm stage: pretrain the offline mini VLM here (:func:`pin.vlm.pretrain.pretrain_mini`)
or, with ``pretrain.source=asset``, install the shipped one after checking that it knows exactly
this data's categories, and measure its recognition again on this machine."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from pin.composed import read_split_records
from pin.errors import PinError
from pin.io import DIR_MODE, atomic_write_json
from pin.vlm.pretrain import (category_vocabulary, facts_of, normalise, pixels_uint8, pretrain_mini,
                              recognition_report, text_recipe)
from pin.vlm.pretrain_text import TextRecipe


def run_pretrain(p, composed_dir: str = "data/composed", out_dir: str = "models/mini_vlm",
                 metrics_path: str = "metrics/pretrain.json", grid: int = 8, workers: int = 0,
                 timing_path: str | None = "metrics/timing.json") -> str:
    """The pretrain_vlm stage: build, pretrain (vision, then language) and save the mini VLM -
    or, with ``pretrain.source=asset``, check and copy the shipped one (see :func:`install_asset`)."""
    text_recipe(p, grid)  # a bad text_mix fails before any image is read
    images = read_split_records(Path(composed_dir) / "pretrain", limit=p.max_images)
    probe = read_split_records(Path(composed_dir) / "heldout", limit=256)  # unseen images, held-out names
    if p.source == "asset":
        return install_asset(p, images, probe, out_dir, metrics_path)
    return pretrain_mini(p, images, probe, out_dir, metrics_path, grid=grid, workers=workers,
                         timing_path=timing_path)


def install_asset(p, images, probe, out_dir: str, metrics_path: str) -> str:
    """Copy the shipped mini VLM into ``out_dir`` after checking it fits this data.

    The asset knows a fixed vocabulary (the categories of the offline default's generate
    params); other categories need ``pretrain.source=train``. Its recognition is measured again
    here, on this machine, on the held-out probe images."""
    from pin.vlm.mini import load_mini, read_mini_config

    asset = Path(p.asset)
    if not (asset / "mini_vlm.json").is_file():
        raise PinError(f"pretrain.asset: no mini VLM at {asset} (expected {asset}/mini_vlm.json); "
                       f"rebuild it with scripts/build_mini_vlm.py or set pretrain.source=train")
    meta = read_mini_config(asset).get("meta", {})
    vocabulary = sorted(set(category_vocabulary(images)) | set(category_vocabulary(probe)))
    known = meta.get("vocabulary", [])
    if vocabulary != known:
        new, gone = sorted(set(vocabulary) - set(known)), sorted(set(known) - set(vocabulary))
        raise PinError(f"pretrain.source=asset: the shipped mini VLM ({asset}) was pretrained on other categories "
                       f"(unknown here: {new[:5]}{'...' if len(new) > 5 else ''}; missing: {gone[:5]}"
                       f"{'...' if len(gone) > 5 else ''}); set pretrain.source=train to pretrain one for these")
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".mini_vlm.", dir=out.parent))
    tmp.chmod(DIR_MODE)  # mkdtemp makes it private
    shutil.copytree(asset, tmp, dirs_exist_ok=True)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    adapter = load_mini(out)
    probe_u8 = pixels_uint8(adapter.flamingo.vision_encoder.image_size[0], probe)
    with torch.no_grad():
        feats = adapter.patch_features(normalise(probe_u8))
    shipped = meta.get("pretrain_metrics", {})
    recipe = text_recipe(p) if not shipped.get("recipe") else TextRecipe(
        mix=tuple(shipped["recipe"]["text_mix"].items()), slot=shipped["recipe"]["slot"])
    report = recognition_report(adapter, feats, [facts_of(im) for im in probe], vocabulary, seed=p.seed, recipe=recipe)
    metrics = {**without_timings(shipped), "source": f"asset {asset}", "recognition_heldout": report}
    atomic_write_json(metrics_path, metrics)
    return (f"installed {asset} ({shipped.get('n_parameters', '?'):,} params, pretrained on "
            f"{shipped.get('device', '?')}); captions P/R {report['caption_precision']:.2f}/"
            f"{report['caption_recall']:.2f}; yes/no {report['qa_exists']}")


def without_timings(metrics: dict) -> dict:
    """``metrics`` without wall-clock ``seconds`` at any depth (an asset built before timings
    left the model files still carries its build's)."""
    return {k: without_timings(v) if isinstance(v, dict) else v for k, v in metrics.items() if k != "seconds"}
