"""The paper profile's one home: profiles/<vlm>.yaml laid over params.yaml (pin.profiles),
selected with `dvc exp run -S profile=...`, and DVC tracking each profile's values per stage."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pin import params
from pin.profiles import profile_values

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml"))


def _project(tmp_path: Path, profile: str, **edits) -> Path:
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["profile"] = profile
    for key, value in edits.items():
        section, name = key.split("__")
        raw[section][name] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return tmp_path / "params.yaml"


def test_one_profile_per_vlm_and_each_is_valid(tmp_path):
    assert PROFILES == ["blip2", "emoji", "offline", "openflamingo"]
    assert profile_values(ROOT / "profiles" / "offline.yaml") == {}  # the offline default is params.yaml
    # the offline design on emoji: pretrained here (the shipped asset knows the shapes only)
    emoji = params.load_yaml(_project(tmp_path / "emoji", "emoji"))
    got = {s: params.parse_section(s, emoji.get(s)) for s in params.SECTIONS}
    assert (got["generate"].backend, got["compose"].backgrounds, got["pretrain"].source) == ("openmoji", "builtin", "train")
    assert (got["pretrain"].slot, got["compose"].appearance, got["vlm"].name) == ("appearance", "pretrain", "mini")
    for name, vlm, grid in (("openflamingo", "openflamingo", 16), ("blip2", "blip2", 14)):
        raw = params.load_yaml(_project(tmp_path / name, name))
        got = {s: params.parse_section(s, raw.get(s)) for s in params.SECTIONS}  # every section validates
        assert (got["vlm"].name, got["compose"].grid, got["compose"].query_names) == (vlm, grid, "clean")
        assert (got["generate"].backend, got["filter"].backend, got["train"].lr) == ("diffusers", "open_clip", 1e-3)
        assert got["eval"].num_beams == 3 and got["train"].steps == 150000
        # what a user sets stays in params.yaml: paths, hub ids, the data sets to evaluate
        assert not {k for k in profile_values(ROOT / "profiles" / f"{name}.yaml")
                    if k.startswith("eval.paths") or k in ("eval.datasets", "compose.backgrounds", "vlm.checkpoint",
                                                           "vlm.lang_model", "vlm.blip2_model", "generate.model")}


def test_a_value_set_both_ways_is_refused_naming_the_key(tmp_path):
    path = _project(tmp_path, "openflamingo", train__steps=10)
    with pytest.raises(params.ParamsError, match=r"train\.steps: params.yaml sets 10 and profiles/openflamingo.yaml "
                                                 r"sets 150000; .*-S profiles/openflamingo.yaml:train.steps="):
        params.load_yaml(path)
    # keys the profile leaves alone are params.yaml's (paths, Tab. 3's sizes, the method)
    path = _project(tmp_path / "ok", "openflamingo", vlm__image_size=448, compose__image_size=448,
                    eval__datasets=["coco"])
    raw = params.load_yaml(path)
    assert (raw["vlm"]["image_size"], raw["compose"]["image_size"], raw["compose"]["grid"]) == (448, 448, 16)
    with pytest.raises(params.ParamsError, match=r"profile: no profiles/paper.yaml \(profiles: blip2, emoji, offline"):
        params.load_yaml(_project(tmp_path / "bad", "paper"))


def test_dvc_reads_each_stages_sections_from_the_selected_profile(tmp_path):
    """dvc.yaml's ``profiles/${profile}.yaml`` entries resolve to the file params.yaml selects,
    and every section a stage reads from params.yaml is also read from the profile."""
    from dvc.repo import Repo

    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    _project(tmp_path, "blip2")
    Repo.init(str(tmp_path), no_scm=True)
    with Repo(str(tmp_path)) as repo:
        stages = {s.addressing: s for s in repo.index.stages}
        for address, stage in stages.items():
            files = {p.def_path: p for p in stage.params}
            assert "profiles/blip2.yaml" in files, address
            from_profile = set(files["profiles/blip2.yaml"].params)
            from_params = {k.split(".")[0] for k in files["params.yaml"].params} - {"method", "threads"}
            assert from_params <= from_profile, (address, from_params - from_profile)
            for profile in PROFILES:  # each profile has every section a stage reads from it
                assert from_profile <= set(yaml.safe_load((ROOT / "profiles" / f"{profile}.yaml").read_text()))


def _cached_repo(cache: Path, repo: str, files: dict[str, bytes]) -> Path:
    """A repository as huggingface_hub's cache holds it (refs/main -> snapshots/<commit>/...)."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snap = folder / "snapshots" / commit
    for name, data in files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_bytes(data)
    return snap


def test_openflamingo_takes_hub_ids_from_the_hub_cache(tmp_path, monkeypatch):
    """vlm.checkpoint / vlm.lang_model as hub ids (params.yaml's defaults) resolve to the local
    copies huggingface_hub keeps; no download here (HF_HUB_OFFLINE=1, a prepared cache)."""
    import huggingface_hub.constants as hub

    from pin.vlm.of_loader import OPENFLAMINGO_3B, from_hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    ckpt = _cached_repo(tmp_path, OPENFLAMINGO_3B.checkpoint_id, {"checkpoint.pt": b"weights"})
    lang = _cached_repo(tmp_path, OPENFLAMINGO_3B.lang_id, {"config.json": b"{}"})
    assert Path(from_hub(OPENFLAMINGO_3B.checkpoint_id, "checkpoint.pt")) == ckpt / "checkpoint.pt"
    assert Path(from_hub(OPENFLAMINGO_3B.lang_id)) == lang and "mpt-1b-redpajama-200b" in str(lang)
    local = tmp_path / "local.pt"
    local.write_bytes(b"x")
    assert from_hub(local, "checkpoint.pt") == local  # a local path is used as it is
    assert from_hub("someone/not-cached", "checkpoint.pt") == "someone/not-cached"  # the caller's message names it
