"""Run a DVC stage's entry point (``stages/<stage>.py``) in-process, in a scratch folder, the way
``dvc repro`` runs it: cwd = the folder, ``params.yaml`` there, ``pin.stage.run_stage`` around it."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def write_params(ws: Path, **overrides: dict) -> None:
    """``ws/params.yaml``: the committed params with ``section={key: value}`` overrides."""
    params = json.loads(json.dumps(PARAMS))
    for section, values in overrides.items():
        params.setdefault(section, {}).update(values)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_entry(stage: str, ws: Path, *args: str) -> tuple[int, list[str], str]:
    """Run stages/<stage>.py's ``main`` under ``run_stage`` in ``ws``; returns (exit status,
    stderr lines without progress bars, stdout)."""
    from pin.stage import run_stage

    spec = importlib.util.spec_from_file_location(f"_stage_{stage}", ROOT / "stages" / f"{stage}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    label = f"{stage}@{args[0]}" if stage == "evaluate" else stage
    err, out = io.StringIO(), io.StringIO()
    old_argv, old_cwd, old_tqdm = sys.argv, os.getcwd(), os.environ.get("TQDM_DISABLE")
    sys.argv, code = [f"stages/{stage}.py", *args], 0
    os.environ["TQDM_DISABLE"] = "1"
    try:
        os.chdir(ws)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            run_stage(label, module.main)
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
        if old_tqdm is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old_tqdm
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip() and "%|" not in ln]
    return code, lines, out.getvalue()
