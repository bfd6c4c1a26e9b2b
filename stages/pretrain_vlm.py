"""DVC stage `pretrain_vlm`: the offline mini VLM, pretrained with image-level texts only.

Stands in for OpenFlamingo's web-scale caption pretraining (no VLM weights can be downloaded
offline). Reads data/composed/pretrain (images of every category, train and held-out, as a web
corpus would hold), writes models/mini_vlm (safetensors + JSON config + tokenizer).
With ``pretrain.source=asset`` (the default) it installs the shipped assets/mini_vlm instead -
the same recipe pretrained longer on a GPU by scripts/build_mini_vlm.py - after checking that
it knows exactly this data's categories, and measures its recognition again here.
With ``vlm.name`` openflamingo or blip2 (paper profile) it does nothing but say so.
"""
from __future__ import annotations

from pin import params
from pin.stage import run_stage
from pin.vlm.pretrain_stage import run_pretrain


def not_used(vlm_name: str, out_dir: str = "models/mini_vlm", metrics_path: str = "metrics/pretrain.json") -> str:
    """OpenFlamingo and BLIP-2 come pretrained: the stage only leaves its outputs saying so (train
    and evaluate depend on them whatever the VLM), without reading the composed data."""
    import shutil
    from pathlib import Path

    from pin.io import atomic_write_json

    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "NOT_USED.txt").write_text(f"vlm.name={vlm_name}: the mini VLM is not used (the VLM comes pretrained)\n")
    atomic_write_json(metrics_path, {"source": "not used", "vlm": vlm_name})
    return f"not used: vlm.name={vlm_name} comes pretrained"


def main() -> str:
    raw = params.load_yaml()
    vlm_name = params.parse_section("vlm", raw.get("vlm")).name
    if vlm_name != "mini":  # paper profile (dvc.yaml: this stage's params include vlm.name)
        return not_used(vlm_name)
    grid = params.parse_section("compose", raw.get("compose")).grid
    return run_pretrain(params.parse_section("pretrain", raw.get("pretrain")), grid=grid)


if __name__ == "__main__":
    run_stage("pretrain_vlm", main)
