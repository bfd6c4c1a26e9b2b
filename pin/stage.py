"""Shared wrapper for DVC stage entry points: one-line errors, non-zero exit, a summary line.

The summary line says how long the stage took, what it made (the stage's own summary) and where
its outputs are and how big - read from the stage's ``outs``/``metrics``/``plots`` in ``dvc.yaml``
(the one list of them), so a stage file never repeats it:
``[train] done in 125.3s: 1,180,224 trainable params, ... -> models/pin (2 files, 2.5 MiB), ...``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from pin.errors import PinError
from pin.params import ParamsError


def one_line(text: object) -> str:
    """A message on one line: newlines and runs of spaces from wrapped library errors collapse."""
    return " ".join(str(text).split())


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 10 else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def stage_outputs(name: str, dvc_yaml: str | Path = "dvc.yaml") -> list[str]:
    """The output paths that ``dvc.yaml`` declares for stage ``name`` (``evaluate@coco`` resolves
    ``${item.<key>}`` of a one-key ``matrix``); [] when the file or stage is not there."""
    import yaml

    try:
        stages = (yaml.safe_load(Path(dvc_yaml).read_text()) or {}).get("stages") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return []
    base, _, item = name.partition("@")
    stage = stages.get(base)
    if not isinstance(stage, dict):
        return []
    subs = {}
    matrix = stage.get("matrix")
    if item and isinstance(matrix, dict) and len(matrix) == 1:
        subs["${item.%s}" % next(iter(matrix))] = item
    paths = []
    for kind in ("outs", "metrics", "plots"):
        for entry in stage.get(kind) or []:
            path = entry if isinstance(entry, str) else next(iter(entry), None) if isinstance(entry, dict) else None
            if not isinstance(path, str):
                continue
            for k, v in subs.items():
                path = path.replace(k, v)
            if "${" not in path:
                paths.append(path)
    return paths


def describe_outputs(outputs: Sequence[str]) -> str:
    """``path (size)`` for each output that exists (folders: total size and file count)."""
    parts = []
    for out in outputs:
        p = Path(out)
        if p.is_file():
            parts.append(f"{out} ({human_size(p.stat().st_size)})")
        elif p.is_dir():
            files = [f for f in p.rglob("*") if f.is_file()]
            parts.append(f"{out} ({len(files)} files, {human_size(sum(f.stat().st_size for f in files))})")
    return ", ".join(parts)


def run_stage(name: str, main: Callable[[], str | None], outputs: Sequence[str] | None = None) -> None:
    """Run a stage's ``main``. A bad input (PinError, ParamsError) or a file-system failure
    (OSError: permission denied, disk full, ...) prints ``[name] error: <one line>`` on stderr and
    exits 1; Ctrl-C exits 130 (every stage resumes or restarts cleanly). Anything else is a bug
    and keeps its traceback. On success one summary line: what ``main`` reports, the time, and
    the ``outputs`` (default: the stage's outputs in ``dvc.yaml``, see :func:`stage_outputs`)."""
    start = time.perf_counter()
    try:
        summary = main()
    except (PinError, ParamsError) as err:
        print(f"[{name}] error: {one_line(err)}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        what = err.strerror or type(err).__name__
        print(f"[{name}] error: {one_line(where + what)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"[{name}] interrupted; rerun to resume", file=sys.stderr)
        sys.exit(130)
    took = time.perf_counter() - start
    made = describe_outputs(stage_outputs(name) if outputs is None else outputs)
    print(f"[{name}] done in {took:.1f}s" + (f": {summary}" if summary else "") + (f" -> {made}" if made else ""))
