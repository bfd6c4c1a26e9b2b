"""End-to-end: the whole DVC pipeline (generate -> filter -> compose -> pretrain_vlm -> train ->
evaluate@synthetic) runs with `dvc repro` in a fresh git repository, writes every declared output,
and reruns only what a params change touches.

The project's files are snapshotted (tracked + untracked-but-not-ignored, as they are on disk, minus
pipeline outputs) into a new git repository with one commit, so the test checks the code under test
both in CI (a clean clone) and during development (uncommitted edits). Params are shrunk so the
whole DAG runs in about a minute on 2 CPU cores.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"
GIT = shutil.which("git")

# Outputs of the pipeline (and DVC's own state): never carried into the snapshot, so the run
# starts from nothing whatever the developer's checkout holds.
EXCLUDE_TOP = {"data", "models", "metrics", "dvclive", ".dvc/cache", ".dvc/tmp"}
EXCLUDE_FILES = {"dvc.lock"}

# Sizes for a run of ~1 minute on 2 cores; each key must exist in params.yaml (checked below),
# so a renamed parameter fails loudly instead of silently running the full-size pipeline.
SMALL = {
    "generate": {"max_categories": 3, "per_category": 6, "image_size": 64},
    "filter": {"min_per_class": 2},
    "compose": {"image_size": 112, "n_train": 64, "n_val": 16, "n_heldout": 24, "n_pretrain": 64,
                "shard_size": 32, "workers": 1},
    "pretrain": {"source": "train", "vision_steps": 3, "lm_steps": 3, "batch_size": 8, "vision_width": 32, "vision_layers": 1,
                 "lm_width": 32, "lm_layers": 2},
    "train": {"steps": 4, "batch_size": 8, "checkpoint_every": 2, "log_every": 1},
    "eval": {"max_queries": 16, "batch_size": 8, "random_draws": 2, "gallery_size": 4},
}
STAGES = ("generate", "filter", "compose", "pretrain_vlm", "train", "evaluate@synthetic", "figures")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(GIT is None, reason="git is not installed"),
    pytest.mark.skipif(not DVC.exists(), reason=f"dvc is not installed next to {sys.executable}"),
]


def _git(cwd: Path, *args: str) -> str:
    out = subprocess.run([GIT, "-c", "user.name=pin-e2e", "-c", "user.email=pin-e2e@example.invalid",
                          "-c", "commit.gpgsign=false", *args], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, f"git {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def _project_files(root: Path) -> list[str]:
    """Tracked files present on disk plus untracked files that git does not ignore."""
    listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    keep = []
    for rel in sorted(set(filter(None, listed))):
        if rel in EXCLUDE_FILES or any(rel == d or rel.startswith(d + "/") for d in EXCLUDE_TOP):
            continue
        if (root / rel).is_file():  # drops tracked files deleted in the working tree, and submodules
            keep.append(rel)
    return keep


def _snapshot(root: Path, dest: Path) -> None:
    for rel in _project_files(root):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)
    _git(dest, "init", "--quiet")
    _git(dest, "add", "-A")
    _git(dest, "commit", "--quiet", "-m", "snapshot for the e2e test")


def _shrink(params_path: Path, overrides: dict) -> None:
    params = yaml.safe_load(params_path.read_text())
    for section, values in overrides.items():
        for key, value in values.items():
            assert key in params[section], f"params.yaml has no {section}.{key}: update SMALL in {__file__}"
            params[section][key] = value
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))


def _env(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        # the editable install points at the developer's pin/; the snapshot's own must win
        PYTHONPATH=str(repo),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # `python` = this venv's
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
        DVC_NO_ANALYTICS="1", TQDM_DISABLE="1",
        DVC_SITE_CACHE_DIR=str(repo.parent / "dvc-site-cache"),  # keep DVC's index out of /var/tmp
    )
    env.pop("DVC_EXP_BASELINE_REV", None)  # not inside a dvc exp run of the outer repo
    env.pop("DVC_ROOT", None)
    return env


def _run(cmd: list[str], repo: Path, cwd: Path | None = None, timeout: int = 900) -> str:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd or repo, env=_env(repo), capture_output=True, text=True, timeout=timeout)
    took = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    print(f"$ {' '.join(map(str, cmd))}  ({took:.1f}s)\n{out}")
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{out}"
    return out


def _ran(out: str, stage: str) -> bool:
    return f"Running stage '{stage}'" in out


def _lock_md5(repo: Path, stage: str, out_path: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    outs = lock["stages"][stage]["outs"]
    return next(o["md5"] for o in outs if o["path"] == out_path)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A fresh repository with shrunk params after one complete `dvc repro` (run once per module)."""
    repo = tmp_path_factory.mktemp("e2e") / "repo"
    repo.mkdir()
    _snapshot(ROOT, repo)
    _shrink(repo / "params.yaml", SMALL)
    _git(repo, "commit", "--quiet", "-am", "shrink params for the e2e test")

    where = _run([sys.executable, "-c", "import pin; print(pin.__file__)"], repo, cwd=repo / "stages")
    assert Path(where.strip().splitlines()[-1]).resolve().is_relative_to(repo.resolve()), where

    start = time.perf_counter()
    out = _run([str(DVC), "repro"], repo)
    return repo, out, time.perf_counter() - start


def test_repro_runs_every_stage_and_writes_outputs(pipeline):
    import pandas as pd
    from pycocotools.coco import COCO

    repo, out, seconds = pipeline
    print(f"first dvc repro: {seconds:.1f}s")
    for stage in STAGES:
        assert _ran(out, stage), f"stage {stage} did not run:\n{out}"

    assert (repo / "dvc.lock").is_file()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(STAGES) <= set(lock["stages"]), sorted(lock["stages"])

    for manifest in ("data/objects/manifest.parquet", "data/filtered/manifest.parquet"):
        df = pd.read_parquet(repo / manifest)
        assert len(df), manifest
    for split in ("train", "val", "heldout", "pretrain"):
        shards = sorted((repo / "data/composed" / split).glob("part-*.parquet"))
        assert shards, f"no shards in data/composed/{split}"
        assert sum(len(pd.read_parquet(s)) for s in shards) > 0, split

    coco = COCO(str(repo / "data/composed/heldout/annotations.json"))
    assert coco.getImgIds() and coco.getAnnIds() and coco.getCatIds()

    mini = repo / "models/mini_vlm"
    assert mini.is_dir() and any(mini.iterdir())
    for name in ("config.json", "model.safetensors"):
        assert (repo / "models/pin" / name).is_file(), name

    train = json.loads((repo / "metrics/train.json").read_text())
    assert train["trainable_params"] > 0
    assert train["steps"] == SMALL["train"]["steps"]

    ev = json.loads((repo / "metrics/eval/synthetic.json").read_text())
    for method in ("pin", "raw", "random", "constant"):
        assert method in ev and "miou" in ev[method], (method, ev)
        assert ev[method]["miou"] is None or 0.0 <= ev[method]["miou"] <= 1.0, (method, ev[method])
    assert len(pd.read_parquet(repo / "data/predictions/synthetic.parquet"))
    for path in ("metrics/plots/synthetic_gallery.png", "metrics/plots/synthetic_miou_by_size.png",
                 "metrics/plots/pin_similarity.png", "metrics/plots/train_curves.png", "metrics/similarity.json",
                 "metrics/filter.json", "metrics/compose.json", "metrics/pretrain.json",
                 "metrics/train_live/metrics.json"):
        assert (repo / path).is_file(), path

    # every stage ends with one summary line: how long, what it made, where
    for stage in STAGES:
        assert re.search(rf"^\[{re.escape(stage)}\] done in \d+\.\ds", out, re.M), f"no summary line for {stage}"
    assert re.search(r"^\[figures\] done in .* -> metrics/similarity\.json \(", out, re.M), out

    status = _run([str(DVC), "status"], repo)
    assert "up to date" in status, status


def test_params_change_reruns_only_downstream(pipeline):
    repo, _, _ = pipeline
    before = {s: _lock_md5(repo, s, p) for s, p in
              (("generate", "data/objects"), ("filter", "data/filtered"), ("compose", "data/composed"))}
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["compose"]["o_max"] = 0.3 if params["compose"]["o_max"] != 0.3 else 0.4
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    status = _run([str(DVC), "status"], repo)
    assert "compose" in status and "generate:" not in status and "filter:" not in status, status

    start = time.perf_counter()
    out = _run([str(DVC), "repro"], repo)
    print(f"second dvc repro: {time.perf_counter() - start:.1f}s")
    assert not _ran(out, "generate") and not _ran(out, "filter"), out
    assert "Stage 'generate' didn't change, skipping" in out, out
    assert "Stage 'filter' didn't change, skipping" in out, out
    for stage in STAGES[2:]:  # compose and everything downstream of its (changed) output
        assert _ran(out, stage), f"stage {stage} did not rerun:\n{out}"

    after = {s: _lock_md5(repo, s, p) for s, p in
             (("generate", "data/objects"), ("filter", "data/filtered"), ("compose", "data/composed"))}
    assert after["generate"] == before["generate"] and after["filter"] == before["filter"]
    assert after["compose"] != before["compose"], "compose reran but its output did not change"
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert lock["stages"]["compose"]["params"]["params.yaml"]["compose"]["o_max"] == params["compose"]["o_max"]
    assert "up to date" in _run([str(DVC), "status"], repo)


def test_method_param_switches_train_and_evaluate_only(pipeline):
    """`method` (dvc exp run -S method=...) reruns train and evaluate only, and the evaluation
    reports the method's own row: a method training inside the vision encoder, then in-context."""
    repo, _, _ = pipeline
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["method"] = "lora_vision"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run([str(DVC), "repro"], repo)
    for stage in STAGES[:4]:
        assert not _ran(out, stage), f"{stage} reran for a method change:\n{out}"
    assert _ran(out, "train") and _ran(out, "evaluate@synthetic"), out
    train = json.loads((repo / "metrics/train.json").read_text())
    assert train["method"] == "lora_vision" and train["trainable_params"] > 0
    ev = json.loads((repo / "metrics/eval/synthetic.json").read_text())
    assert {"lora_vision", "lora_vision_shuffled", "raw", "random", "constant"} <= set(ev) and "pin" not in ev

    params["method"] = "incontext"
    params["baselines"].update(incontext_shots=[1, 2], incontext_repeats=2)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run([str(DVC), "repro"], repo)
    train = json.loads((repo / "metrics/train.json").read_text())
    assert train["method"] == "incontext" and train["trainable_params"] == 0 and train["steps"] == 0
    ev = json.loads((repo / "metrics/eval/synthetic.json").read_text())
    for k in (1, 2):
        row = ev[f"incontext_{k}"]
        assert row["draws"] == 2 and "miou_std" in row and 0 <= row["miou"] <= 1
    assert "up to date" in _run([str(DVC), "status"], repo)
