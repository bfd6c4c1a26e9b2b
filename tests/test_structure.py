"""The codebase's shape, checked: dvc.yaml's deps are true, no import cycles, the library imports
without the pipeline's params, and no module (400 lines) or function (80) grows past what one
person reads in a sitting."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from import_graph import ROOT, all_modules, closure, cycles, module_file

MAX_LINES = 400
LIBRARY = ("pin.insert", "pin.boxes", "pin.vlm", "pin.methods")


def _stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _entry_script(stage: dict) -> str:
    script = stage["cmd"].split()[1]
    assert script.startswith("stages/") and script.endswith(".py"), stage["cmd"]
    return script


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def _has_code(path: Path) -> bool:
    """An __init__.py with only a docstring runs nothing worth a dependency."""
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


@pytest.mark.parametrize("name", sorted(_stages()))
def test_dvc_deps_cover_every_module_the_stage_imports(name):
    stage = _stages()[name]
    script = _entry_script(stage)
    deps = [str(d) for d in stage["deps"]]
    assert _covered(script, deps), f"{name}: its entry point {script} is not in its deps"
    needed = sorted(str(module_file(m).relative_to(ROOT)) for m in closure(script))
    missing = [p for p in needed if not _covered(p, deps) and (
        not p.endswith("__init__.py") or _has_code(ROOT / p))]
    assert not missing, (
        f"dvc.yaml stage {name!r} runs code it does not list in deps, so `dvc repro` would skip "
        f"it after those files change: {missing}")


@pytest.mark.parametrize("name", sorted(_stages()))
def test_dvc_deps_list_no_code_the_stage_does_not_run(name):
    # a listed module the stage never imports reruns it (and everything after it) for nothing
    stage = _stages()[name]
    script = _entry_script(stage)
    ran = {str(module_file(m).relative_to(ROOT)) for m in closure(script)} | {script}
    unused = []
    for dep in map(str, stage["deps"]):
        path = ROOT / dep
        code = [dep] if dep.endswith(".py") else [str(p.relative_to(ROOT)) for p in path.rglob("*.py")] \
            if path.is_dir() else []
        if code and not ran.intersection(code):
            unused.append(dep)
    assert not unused, f"dvc.yaml stage {name!r} lists code it never imports in deps: {unused}"


def test_import_graph_sees_lazy_imports(tmp_path):
    # The graph must count an import inside a function: a stage that takes that path runs it.
    from import_graph import _imported_names

    tree = ast.parse("def f():\n    from pin.vlm import mini\n")
    assert "pin.vlm.mini" in _imported_names(tree, "pin.x", False)
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pin.params\n")
    assert "pin.params" not in _imported_names(tree, "pin.x", False)


def test_no_import_cycles_inside_pin():
    assert cycles() == [], "import cycles inside pin/ (each group imports itself in a loop)"


def test_library_imports_without_pipeline_params():
    code = ("import sys; import " + ", ".join(LIBRARY) +
            "; print(sorted(m for m in sys.modules if m == 'pin.params' or m.startswith('pin.params.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", f"importing {', '.join(LIBRARY)} pulls in the pipeline's params: {out}"


def test_library_modules_do_not_reach_params_statically():
    # Stronger than the runtime check: no lazy import anywhere in the library reaches pin.params.
    bad = {}
    for module in all_modules():
        if module.startswith(LIBRARY) and "pin.params" in closure(module):
            bad[module] = "pin.params"
    assert not bad, f"library modules that import the pipeline's params (maybe lazily): {sorted(bad)}"


def test_no_module_over_max_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "pin").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them along their seams): {long}"


MAX_FUNCTION_LINES = 80


def test_no_function_over_max_lines():
    long = {}
    for path in (ROOT / "pin").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    (n := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them into helpers along their seams): {long}"
