"""The stages under ``accelerate launch`` with 2 CPU processes (gloo), as docs/profiles.md shows
them. train: the same insert as one process within 1e-4 (a hundredth of one Adam step at lr 1e-2;
the slices' losses are weighted by their answer tokens, so only the order of float sums differs:
measured 1.9e-5 after 60 steps); a 2-process run SIGKILLed after a checkpoint resumes to the bytes
of an uninterrupted one. evaluate and generate: one process's bytes. The workspace is the tiny
mini profile in the real on-disk formats (a saved mini VLM, composed parquet shards, a
COCO-format held-out set)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

torch.set_num_threads(1)

from pin.launch import free_port  # noqa: E402
from stage_runner import ROOT, run_entry, write_params  # noqa: E402
from test_train import CFG, _image, _write_split  # noqa: E402

ACCELERATE = Path(sys.executable).parent / "accelerate"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not ACCELERATE.exists(), reason=f"no accelerate next to {sys.executable}")]

TRAIN = {"steps": 60, "batch_size": 4, "lr": 1e-2, "checkpoint_every": 3, "log_every": 5}
EVAL = {"batch_size": 2, "gallery_size": 2, "random_draws": 2}
OUTPUTS = ("models/pin", "metrics/train.json", "metrics/train_live")


def _heldout(folder: Path) -> None:
    """A COCO-format held-out set: 5 images, one or two objects each."""
    (folder / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(5):
        im = _image(i)
        im.pil().save(folder / "images" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": im.width, "height": im.height})
        for k, o in enumerate(im.objects * (1 + i % 2)):
            x1, y1, x2, y2 = o.box
            anns.append({"id": 10 * i + k, "image_id": i, "category_id": 1 if o.category == "dog" else 2,
                         "bbox": [x1 + 4 * k, y1, x2 - x1, y2 - y1], "iscrowd": 0, "referral": o.category})
    (folder / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "cup"}]}))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The stage inputs every workspace copies: models/mini_vlm, data/composed."""
    from pin.vlm.mini import build_mini_flamingo, save_mini

    root = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    flamingo, _, tok = build_mini_flamingo(CFG, ["dog", "cup"])
    save_mini(root / "models" / "mini_vlm", flamingo, tok, CFG, meta={"vocabulary": ["dog", "cup"]})
    _write_split(root / "data" / "composed" / "train", [_image(i) for i in range(16)])
    _write_split(root / "data" / "composed" / "val", [_image(i) for i in range(16, 24)])
    _heldout(root / "data" / "composed" / "heldout")
    return root


def _workspace(inputs: Path, path: Path) -> Path:
    shutil.copytree(inputs, path)
    write_params(path, train=TRAIN, eval=EVAL, vlm={"device": "cpu", "path": "models/mini_vlm"},
                 pin={"layers": 1, "hidden": [16]})
    return path


def test_relaunch_only_with_several_processes_and_not_twice(monkeypatch):
    from pin.launch import accelerate_command, launched, relaunch

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not launched()
    relaunch(1, "train.processes")  # returns: one process is the plain command
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched()
    relaunch(2, "train.processes")  # returns: already one of the launched processes
    cmd = accelerate_command(3, ["stages/train.py"], port=29555)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and cmd[-1] == "stages/train.py"
    assert cmd[cmd.index("--num_processes") + 1] == "3" and cmd[cmd.index("--main_process_port") + 1] == "29555"


# docs/profiles.md's launch command, word for word (test_docs_show_the_tested_commands)
LAUNCH = "launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no".split()


def launch_command(script: str, *args: str) -> list[str]:
    """docs/profiles.md's command, on the CPU (ACCELERATE_USE_CPU=1 in the environment: gloo)."""
    return [str(ACCELERATE), *LAUNCH, "--main_process_port", str(free_port()), str(ROOT / "stages" / script), *args]


def test_docs_show_the_tested_commands():
    doc = (ROOT / "docs" / "profiles.md").read_text()
    for stage in ("train.py", "evaluate.py synthetic", "generate.py"):
        assert f"accelerate {' '.join(LAUNCH)} stages/{stage}" in doc, stage
    assert "dvc exp run -S train.processes=2 -S eval.processes=2" in doc  # the processes params (below)
    for line in ("python stages/generate.py --shard ${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}",
                 "python stages/generate.py --merge 8", "dvc remote add -d storage"):
        assert line in doc, line  # the shard commands: tests/test_generate_shards.py


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def _launch(ws: Path, script: str, *args: str) -> str:
    return _run(ws, launch_command(script, *args))


def _dvc_cmd(ws: Path, script: str, *args: str) -> str:
    """The stage's dvc.yaml command, ``python stages/<script>``: with ``<section>.processes: 2`` in
    params.yaml it relaunches itself (pin.launch), as under ``dvc repro``."""
    # pin.launch sets ACCELERATE_USE_CPU (no GPU here) and picks a free port
    env = {k: v for k, v in _env().items() if k not in ("ACCELERATE_USE_CPU", "PIN_MAIN_PROCESS_PORT")}
    return _run(ws, [sys.executable, str(ROOT / "stages" / script), *args], env)


def _run(ws: Path, cmd: list[str], env: dict | None = None) -> str:
    proc = subprocess.run(cmd, cwd=ws, env=env or _env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _files(ws: Path, names=OUTPUTS) -> dict[str, bytes]:
    out = {}
    for name in names:
        p = ws / name
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                out[f.relative_to(ws).as_posix()] = f.read_bytes()
    return out


def _weights(ws: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(ws / "models" / "pin" / "model.safetensors")


@pytest.fixture(scope="module")
def two(inputs, tmp_path_factory):
    """A workspace trained by 2 processes, uninterrupted: ``train.processes: 2`` and the stage's
    dvc.yaml command."""
    ws = _workspace(inputs, tmp_path_factory.mktemp("two") / "ws")
    write_params(ws, train={**TRAIN, "processes": 2}, eval=EVAL, vlm={"device": "cpu", "path": "models/mini_vlm"},
                 pin={"layers": 1, "hidden": [16]})
    said = _dvc_cmd(ws, "train.py")
    assert "[train.processes] 2 processes" in said and "resuming" not in said
    assert not (ws / "models" / "pin_checkpoints").exists()  # the main process cleaned up
    return ws


def test_two_processes_train_as_one(inputs, two, tmp_path):
    one = _workspace(inputs, tmp_path / "one")
    code, err, _ = run_entry("train", one)
    assert code == 0, err
    # the same insert within 1e-4, the same loss curve within 1e-4
    w1, w2 = _weights(one), _weights(two)
    assert w1.keys() == w2.keys()
    gap = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    assert gap < 1e-4, gap
    m1, m2 = (json.loads((ws / "metrics" / "train.json").read_text()) for ws in (one, two))
    assert m1.keys() == m2.keys() and m1["steps"] == m2["steps"] == TRAIN["steps"]
    assert abs(m1["final_loss"] - m2["final_loss"]) <= 1e-4 and abs(m1["val_loss"] - m2["val_loss"]) <= 1e-4
    curves = [(ws / "metrics/train_live/plots/metrics/train/loss.tsv").read_text().split() for ws in (one, two)]
    assert len(curves[0]) == len(curves[1]) == 2 + 2 * TRAIN["steps"] // TRAIN["log_every"]
    assert all(a == b if i < 2 else abs(float(a) - float(b)) < 1e-4 for i, (a, b) in enumerate(zip(*curves)))
    print(f"1 vs 2 processes: max |insert weight gap| {gap:.2e}; final loss {m1['final_loss']} vs "
          f"{m2['final_loss']}; val loss {m1['val_loss']} vs {m2['val_loss']}")


def test_two_processes_evaluate_to_one_process_bytes(two, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(two, ws)
    code, err, _ = run_entry("evaluate", ws, "synthetic")
    assert code == 0, err
    evaluated = ("data/predictions/synthetic.parquet", "metrics/eval/synthetic.json")
    single = _files(ws, evaluated)
    assert len(single) == 2
    for name in evaluated:
        (ws / name).unlink()
    write_params(ws, train=TRAIN, eval={**EVAL, "processes": 2}, vlm={"device": "cpu", "path": "models/mini_vlm"},
                 pin={"layers": 1, "hidden": [16]})
    assert "[eval.processes] 2 processes" in _dvc_cmd(ws, "evaluate.py", "synthetic")
    assert _files(ws, evaluated) == single  # rows in the same order


def test_two_processes_killed_after_a_checkpoint_resume_to_the_same_bytes(inputs, two, tmp_path):
    ws = _workspace(inputs, tmp_path / "killed")
    ckpt = ws / "models" / "pin_checkpoints" / "last.pt"
    proc = subprocess.Popen(launch_command("train.py"), cwd=ws, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        # the launcher and both training processes (torchrun starts them in sessions of their own)
        for victim in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
            victim.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert ckpt.exists() and not (ws / "models" / "pin").exists(), "killed too late: the run had finished"
    step = torch.load(ckpt, map_location="cpu", weights_only=False)["step"]
    assert 0 < step < TRAIN["steps"]
    said = _launch(ws, "train.py")
    assert "resuming from step" in said
    assert _files(ws) == _files(two)
    assert not (ws / "models" / "pin_checkpoints").exists()


def test_two_processes_generate_one_processes_folder(tmp_path):
    gen = {"backend": "shapes", "max_categories": 3, "per_category": 2, "image_size": 32}
    one, two = tmp_path / "one", tmp_path / "two"
    for ws in (one, two):
        ws.mkdir()
        write_params(ws, generate=gen)
    code, err, _ = run_entry("generate", one)
    assert code == 0, err
    _launch(two, "generate.py")
    tree = [_files(ws, ["data/objects"]) for ws in (one, two)]
    assert tree[0] == tree[1] and len(tree[0]) == 2 + 6 * 2
