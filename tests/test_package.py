"""What `pip install .` ships and `import pin` loads: the product only - no research tool, no
rehearsal, no stand-in model builder (those live in research/ and rehearsal/ beside pin/)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_SHIPPED = ("rehears", "standin", "stand_in", "probe_position", "scratch_recipes", "mini_vlm_report",
               "pretrain_language", "slot_styles", "research")


def test_the_wheel_holds_only_the_product(tmp_path):
    pytest.importorskip("setuptools")  # the build backend, used offline (no build isolation)
    # built from a copy (setuptools writes build/ next to pyproject.toml), with the research and
    # rehearsal folders present beside pin/ as in a checkout
    src = tmp_path / "src"
    for name in ("pin", "research", "rehearsal"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", src / "pyproject.toml")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
                          "-q", "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = [n for n in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in n]
    assert names and all(n.startswith("pin/") for n in names), sorted({n.split("/")[0] for n in names})
    modules = [n for n in names if n.endswith(".py")]
    assert "pin/cli.py" in modules and "pin/methods/__init__.py" in modules
    shipped = [m for m in modules if any(word in m for word in NOT_SHIPPED)]
    assert not shipped, f"research or stand-in modules in the wheel: {shipped}"


def test_importing_the_product_loads_no_research_module():
    code = ("import sys, pin, pin.cli, pin.methods, pin.vlm.registry; "
            "print('\\n'.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    loaded = [m for m in out.split() if any(word in m for word in NOT_SHIPPED)]
    assert not loaded, f"importing pin loads {loaded}"
