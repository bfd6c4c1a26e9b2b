"""Outputs get the usual umask-based modes, not mkstemp's private 0600 (other users can read them)."""
import os
import stat

from pin.io import FILE_MODE, atomic_write_json


def test_atomic_write_gives_umask_mode(tmp_path):
    target = tmp_path / "m.json"
    atomic_write_json(target, {"a": 1})
    assert stat.S_IMODE(os.stat(target).st_mode) == FILE_MODE
