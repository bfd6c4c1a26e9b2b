"""A short run of scripts/kill_anywhere.py: `dvc repro` SIGKILLed once inside each long stage
(generate, compose, pretrain_vlm and train), rerun, and compared file by file - models, metrics,
pictures and dvc.lock included, wall-clock timings nowhere excepted - with an uninterrupted run.
The full check - 12 kills over generate, compose, pretrain_vlm and train - is the script itself:
``python scripts/kill_anywhere.py`` (about 4-6 minutes on 2 CPU cores)."""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed"),
    pytest.mark.skipif(not DVC.exists(), reason=f"dvc is not installed next to {sys.executable}"),
]


def test_killed_long_stages_end_identical(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("kill_anywhere", ROOT / "scripts" / "kill_anywhere.py")
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script  # its dataclasses look their module up
    spec.loader.exec_module(script)
    rc = script.main(["--kills", "generate=1,compose=1,pretrain_vlm=1,train=1", "--target", "train", "--seed", "1",
                      "--workdir", str(tmp_path / "work")])
    out = capsys.readouterr().out
    print(out)
    assert rc == 0, out
    assert "RESULT: PASS" in out and "differing: 0" in out and "network connection attempts (dvc and every stage): 0" in out
