"""Outputs get the usual umask-based modes, not mkstemp's private 0600 (other users can read them)."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

WRITE = """
import os, sys
os.umask(int(sys.argv[1], 8))  # before pin.io reads it, as a shell's umask would be
from pin.io import atomic_write_json, record_timing
atomic_write_json(sys.argv[2], {"a": 1})
record_timing(sys.argv[3], "train", {"seconds": 1.0})
"""


@pytest.mark.parametrize("umask, want", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_write_gives_the_umask_mode(tmp_path, umask, want):
    # each umask in a fresh process: pin.io reads it once, at import
    files = [tmp_path / "m.json", tmp_path / "timing.json"]
    subprocess.run([sys.executable, "-c", WRITE, oct(umask), *map(str, files)], cwd=ROOT, check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == want, f.name
