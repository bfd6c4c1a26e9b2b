"""Shared wrapper for DVC stage entry points: one-line errors, non-zero exit, a summary line.

The summary line says how long the stage took, what it made (the stage's own summary) and where
its outputs are and how big - read from the stage's ``outs``/``metrics``/``plots`` in ``dvc.yaml``
(the one list of them), so a stage file never repeats it:
``[train] done in 125.3s: 1,180,224 trainable params, ... -> models/pin (2 files, 2.5 MiB), ...``.
"""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from pin.errors import PinError
from pin.params import ParamsError


def one_line(text: object) -> str:
    """A message on one line: newlines and runs of spaces from wrapped library errors collapse."""
    return " ".join(str(text).split())


DEBUG_ENV = "PIN_DEBUG"  # PIN_DEBUG=1: a failing stage or `pin` command shows its full traceback


def debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


# What went wrong, by the exception's class name (libraries we read files with): the phrase
# before the library's own message, so a user sees what kind of failure it is.
_WHAT = {
    "UnidentifiedImageError": "not an image file Pillow can read",
    "DecompressionBombError": "image too large (decompression-bomb limit)",
    "ArrowInvalid": "not a readable Parquet/Arrow file",
    "ArrowIOError": "cannot read the Parquet/Arrow file",
    "SafetensorError": "not a readable safetensors file",
    "HeaderTooLarge": "not a readable safetensors file",
    "JSONDecodeError": "not valid JSON",
    "UnpicklingError": "not a readable pickle",
    "YAMLError": "not valid YAML",
    "UnicodeDecodeError": "not UTF-8 text",
    "MemoryError": "out of memory",
    "OSError": "cannot read or write a file",  # one without errno/strerror (Pillow's decoders, ...)
}


_QUOTED = re.compile(r"'([^'\n]{1,4096})'")


def _path_of(err: BaseException) -> str | None:
    """The file an exception is about, when it records one (OSError.filename, or a path a
    reader attached with ``err.add_note("path: <file>")``)."""
    name = getattr(err, "filename", None)
    if isinstance(name, (str, os.PathLike)) and str(name):
        return str(name)
    for note in getattr(err, "__notes__", ()) or ():
        if isinstance(note, str) and note.startswith("path: "):
            return note[len("path: "):]
    # Pillow, pyarrow and others quote the file in their message: the first quoted existing path
    for quoted in _QUOTED.findall(str(err)):
        if os.path.exists(quoted):
            return quoted
    return None


def error_line(err: BaseException) -> str:
    """``<path>: <what went wrong> (<exception message>)`` on one line. A PinError/ParamsError is
    our own message, already in that form; an OSError says its strerror; another library error
    gets a phrase for its class (:data:`_WHAT`) or, when we know none, the class name."""
    if isinstance(err, (PinError, ParamsError)):
        return one_line(err)
    path = _path_of(err)
    name = type(err).__name__
    what = getattr(err, "strerror", None) if isinstance(err, OSError) else None
    what = what or next((w for cls in type(err).__mro__ for k, w in _WHAT.items() if cls.__name__ == k), None)
    message = str(err)
    if path and what and (not message or message == what or message.endswith(f"{what}: '{path}'")
                          or message.endswith(f"{what}: {path!r}")):
        message = ""  # OSError's str() repeats strerror and the path
    if what is None:
        what = f"unexpected {name} (a bug? rerun with {DEBUG_ENV}=1 for the traceback)"
    detail = f" ({name}: {message})" if message else ""
    return one_line(f"{path}: {what}{detail}" if path else f"{what}{detail}")


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


def apply_threads(n: int) -> None:
    """Compute with ``n`` CPU threads (params.yaml ``threads``) whatever the machine: a float sum
    split over another number of threads rounds differently, so the same params would give other
    bytes on another core count or OMP_NUM_THREADS. The environment covers libraries imported
    later (and child processes); torch, when already imported, is set directly."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
        if torch.get_num_interop_threads() != n:
            try:
                torch.set_num_interop_threads(n)
            except RuntimeError:  # only before the first parallel work; it changes no result
                pass


def stage_threads(params_file: str | Path = "params.yaml") -> int:
    """params.yaml's ``threads`` (the default when there is no params file: the stage then
    reports that itself)."""
    from pin import params

    return params.parse_threads(params.load_yaml(params_file)) if Path(params_file).is_file() \
        else params.DEFAULT_THREADS


def run_stage(name: str, main: Callable[[], str | None], outputs: Sequence[str] | None = None) -> None:
    """Run a stage's ``main``. Any failure prints ``[name] error: <path>: <what went wrong>
    (<exception message>)`` (:func:`error_line`) on stderr and exits 1; with ``PIN_DEBUG=1`` the
    full traceback follows. Ctrl-C exits 130 (every stage resumes or restarts cleanly). On success
    one summary line: what ``main`` reports, the time, and the ``outputs`` (default: the stage's
    outputs in ``dvc.yaml``, see :func:`stage_outputs`). Before ``main``, the CPU threads are
    set from params.yaml's ``threads`` (:func:`apply_threads`)."""
    start = time.perf_counter()
    try:
        apply_threads(stage_threads())
        summary = main()
    except KeyboardInterrupt:
        print(f"[{name}] interrupted; rerun to resume", file=sys.stderr)
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - every failure is one line; PIN_DEBUG=1 adds the traceback
        print(f"[{name}] error: {error_line(err)}", file=sys.stderr)
        if debug():
            import traceback

            traceback.print_exc()
        sys.exit(1)
    took = time.perf_counter() - start
    made = describe_outputs(stage_outputs(name) if outputs is None else outputs)
    print(f"[{name}] done in {took:.1f}s" + (f": {summary}" if summary else "") + (f" -> {made}" if made else ""))
