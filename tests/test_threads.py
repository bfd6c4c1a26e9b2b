"""The same bytes whatever the core count and OMP_NUM_THREADS: every stage computes with
params.yaml's ``threads`` (pin.stage.apply_threads)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stage_runner import ROOT, write_params
from test_bad_inputs import composed_train, models

def _train(ws: Path, omp: str) -> dict[str, bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": omp, "MKL_NUM_THREADS": omp,
           "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, str(ROOT / "stages/train.py")], cwd=ws, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = ws / "models/pin"
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def test_a_tiny_insert_trains_to_the_same_bytes_at_1_and_2_environment_threads(tmp_path):
    runs = []
    for omp in ("1", "2"):
        ws = tmp_path / omp
        ws.mkdir()
        models(ws)
        composed_train(ws)
        (ws / "data/composed/val").mkdir(parents=True)
        shutil.copy(ws / "data/composed/train/part-00000.parquet", ws / "data/composed/val")
        write_params(ws, train={"steps": 4, "batch_size": 4, "checkpoint_every": 2, "log_every": 1},
                     pin={"layers": 1, "hidden": [8]})
        runs.append(_train(ws, omp))
    assert runs[0] == runs[1] and "model.safetensors" in runs[0]


def test_stages_apply_the_threads_param(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from pin.stage import run_stage

    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    seen = []
    try:
        for n in (1, 3):
            (tmp_path / "params.yaml").write_text(f"threads: {n}\n")
            run_stage("s", lambda: seen.append((torch.get_num_threads(), os.environ["OMP_NUM_THREADS"])), outputs=[])
        assert seen == [(1, "1"), (3, "3")]
        (tmp_path / "params.yaml").write_text("threads: 0\n")
        with pytest.raises(SystemExit):
            run_stage("s", lambda: None, outputs=[])
    finally:
        torch.set_num_threads(before)
        monkeypatch.setenv("OMP_NUM_THREADS", str(before))


SUM = """
import sys, torch
from pin.stage import run_stage

def main():
    x = torch.rand(4_000_000, generator=torch.Generator().manual_seed(0))
    print(repr(x.sum().item()))  # split over the threads: its rounding depends on their number

run_stage("s", main, outputs=[]) if sys.argv[1] == "stage" else main()
"""


def test_a_thread_sensitive_sum_is_pinned_by_the_stage(tmp_path):
    """What the insert test cannot show at its size: a sum that differs between 1 and 2 threads
    comes out the same under run_stage whatever OMP_NUM_THREADS."""
    (tmp_path / "params.yaml").write_text("threads: 2\n")

    def run(how: str, omp: str) -> str:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": omp, "MKL_NUM_THREADS": omp}
        res = subprocess.run([sys.executable, "-c", SUM, how], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, res.stderr
        return res.stdout.splitlines()[0]

    staged = {omp: run("stage", omp) for omp in ("1", "2")}
    assert staged["1"] == staged["2"]
    if run("raw", "1") == staged["1"]:  # the stages compute with 2 threads
        pytest.skip("this machine's sum does not depend on the thread count")
