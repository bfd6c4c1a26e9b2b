"""The import graph of the ``pin`` package, read from the source with ``ast`` (nothing is
imported, so a module that needs a GPU or an optional library is still seen).

Every import counts, the ones inside functions too: a lazy import still runs when a stage takes
that path, so it is still a dependency and can still close a cycle. Imports under
``if TYPE_CHECKING:`` are left out (they never run)."""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "pin"


def module_file(name: str) -> Path | None:
    """``pin.synth.compose`` -> pin/synth/compose.py (or the package's __init__.py)."""
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    rel = path.resolve().relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def all_modules() -> list[str]:
    return sorted(module_name(p) for p in (ROOT / PACKAGE).rglob("*.py"))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(tree: ast.AST, here: str, is_package: bool) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = here.split(".") if is_package else here.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            found.add(base)
            # `from pin.vlm import mini` imports the module pin.vlm.mini
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


@cache
def direct_imports(name: str) -> frozenset[str]:
    """The pin modules that module ``name`` (a pin module or a script path) imports directly,
    with the packages whose __init__ runs on the way (pin.vlm for pin.vlm.mini)."""
    path = module_file(name) if not name.endswith(".py") else ROOT / name
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path) if path.is_relative_to(ROOT / PACKAGE) else "__main__"
    out: set[str] = set()
    for imported in _imported_names(tree, here, path.name == "__init__.py"):
        parts = imported.split(".")
        if parts[0] != PACKAGE:
            continue
        for i in range(1, len(parts) + 1):
            candidate = ".".join(parts[:i])
            if candidate != here and module_file(candidate) is not None:
                out.add(candidate)
    return frozenset(out)


def closure(start: str) -> set[str]:
    """Every pin module reachable from ``start`` (a module name or a script path)."""
    seen: set[str] = set()
    todo = list(direct_imports(start))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(direct_imports(name) - seen)
    return seen


def cycles() -> list[list[str]]:
    """Strongly connected components of size > 1 (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in direct_imports(v):
            # A module's own parent packages run first by design (pin.vlm before pin.vlm.mini):
            # that implicit edge is not a cycle a refactor could break.
            if v.startswith(w + "."):
                continue
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in all_modules():
        if module not in index:
            strongconnect(module)
    return found
