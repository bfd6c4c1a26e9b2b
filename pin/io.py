"""Atomic file writes and run fingerprints: no reader ever sees a half-written file."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

# mkstemp/mkdtemp create private (0600/0700) entries; outputs get the usual umask-based modes.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


def atomic_write_bytes(path: str | Path, data: bytes, durable: bool = False) -> None:
    """Write to a temporary sibling, then rename: readers see the old file or the new, never half.

    ``durable`` adds an fsync (survives power loss, ~4 ms a file); a killed process needs only the
    rename, so bulk writers leave it off."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def tmp_path_for(path: str | Path) -> Path:
    """A sibling temporary name for writers (pyarrow, PIL) that need a path, to os.replace later."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def remove_temp_files(root: str | Path) -> int:
    """Delete the temporary files a killed writer left under ``root`` (``.<name>.<suffix>.tmp``,
    from :func:`atomic_write_bytes` and :func:`tmp_path_for`); returns how many. Only a stage that
    owns ``root`` calls this, before it writes: no live writer can be cut off."""
    import shutil

    n = 0
    root = Path(root)
    if not root.is_dir():
        return 0
    for p in sorted(root.rglob(".*.tmp")):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        n += 1
    return n


def record_timing(path: str | Path, stage: str, timings: dict) -> None:
    """Put ``timings`` under ``stage`` in the JSON file at ``path``, keeping the other stages'.
    Wall-clock values differ on every run, so they live here, uncommitted, and never in a
    committed metrics file, a model file or a training curve (a rerun must change no byte)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    data[stage] = timings
    atomic_write_json(path, data)


def fingerprint(obj: Any) -> str:
    """Stable short hash of a JSON-able config: a resumed run only reuses work made with the same one."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def prepare_resumable_dir(path: str | Path, config: dict) -> bool:
    """Make ``path`` ready for a resumable stage.

    Returns True when the folder holds work from an identical config (resume), False when it was
    (re)started empty. Work from another config is removed, never mixed in.
    """
    import shutil

    path = Path(path)
    stamp = path / "_config.json"
    want = fingerprint(config)
    if path.exists():
        try:
            have = json.loads(stamp.read_text()).get("fingerprint")
        except (OSError, ValueError):
            have = None
        if have == want:
            return True
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stamp, {"fingerprint": want, "config": config})
    return False
