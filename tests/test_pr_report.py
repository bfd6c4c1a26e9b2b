"""The pull-request workflow: it is a valid GitHub Actions workflow (GitHub's own schema, checked
offline by check-jsonschema) whose local scripts exist, and the report script it runs works on a
small DVC project with a `main` branch (sorted metrics table, curves picture, image plots of both
revisions, interactive page)."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "pr.yml"
DVC = Path(sys.executable).parent / "dvc"
GIT = shutil.which("git")
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"

_spec = importlib.util.spec_from_file_location("pr_report", ROOT / "scripts" / "pr_report.py")
pr_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pr_report)
build_report, line_series, sort_md_tables = pr_report.build_report, pr_report.line_series, pr_report.sort_md_tables


def _validate(path: Path) -> subprocess.CompletedProcess:
    assert CHECK_JSONSCHEMA.exists(), "check-jsonschema is not installed: pip install -e '.[test]'"
    return subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_workflow_is_valid_for_github(tmp_path):
    res = _validate(WORKFLOW)
    assert res.returncode == 0, res.stdout + res.stderr
    # the control: the same workflow with a job that says where to run misspelt is refused
    broken = tmp_path / "pr.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "run-on:"))
    res = _validate(broken)
    assert res.returncode != 0 and "runs-on" in res.stdout


def test_workflow_runs_scripts_that_exist():
    scripts = set(re.findall(r"(?:bash|python) (scripts/\S+)", WORKFLOW.read_text()))
    assert {"scripts/setup.sh", "scripts/pr_report.py"} <= scripts
    assert all((ROOT / s).is_file() for s in scripts), scripts


def test_sort_md_tables():
    md = ("intro\n| Path | Metric | a |\n|---|---|---|\n| m.json | b.y | 2 |\n| m.json | a.x | 1 |\n"
          "| l.json | z | 3 |\n\ntext after\n| k | v |\n|:--|--:|\n| 2 | x |\n| 10 | y |\n")
    assert sort_md_tables(md) == (
        "intro\n| Path | Metric | a |\n|---|---|---|\n| l.json | z | 3 |\n| m.json | a.x | 1 |\n"
        "| m.json | b.y | 2 |\n\ntext after\n| k | v |\n|:--|--:|\n| 10 | y |\n| 2 | x |\n")
    assert sort_md_tables("no table\n") == "no table\n"


def test_line_series_reads_every_revision():
    data = {"data": {"p.tsv": [{"type": "vega", "revisions": ["workspace", "main"], "content": {
        "encoding": {"x": {"field": "step"}},
        "data": {"values": [{"step": "2", "loss": "1.0", "rev": "workspace"},
                            {"step": "1", "loss": "2.0", "rev": "workspace"},
                            {"step": "1", "loss": "3.0", "rev": "main"}]}}}]}}
    assert line_series(data) == {"p.tsv": {"workspace": ("step", "loss", [1.0, 2.0], [2.0, 1.0]),
                                           "main": ("step", "loss", [1.0], [3.0])}}


def _git(repo, *args):
    out = subprocess.run([GIT, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c",
                          "commit.gpgsign=false", *args], cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.skipif(GIT is None or not DVC.exists(), reason="needs git and dvc")
def test_report_on_a_small_project(tmp_path):
    repo = tmp_path / "proj"
    (repo / "metrics" / "live").mkdir(parents=True)
    (repo / "dvc.yaml").write_text(
        "metrics:\n  - metrics/eval.json\nplots:\n  - metrics/live:\n      x: step\n  - metrics/pic.png\n")
    (repo / "params.yaml").write_text("train: {lr: 0.1, steps: 10}\n")

    def write(miou, p50, colour, lr):
        (repo / "metrics" / "eval.json").write_text(json.dumps({"pin": {"p50": p50, "miou": miou},
                                                                "raw": {"miou": 0.1}}))
        rows = "".join(f"{s}\t{2.0 / (1 + s * lr):.4f}\n" for s in range(0, 100, 10))
        (repo / "metrics" / "live" / "loss.tsv").write_text(f"step\tloss\n{rows}")
        Image.new("RGB", (40, 30), colour).save(repo / "metrics" / "pic.png")

    write(0.2, 0.1, (255, 0, 0), 0.1)
    _git(repo, "init", "-q", "-b", "main")
    assert subprocess.run([str(DVC), "init", "-q"], cwd=repo).returncode == 0
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "main")
    write(0.3, 0.2, (0, 0, 255), 0.2)
    (repo / "params.yaml").write_text("train: {lr: 0.2, steps: 10}\n")

    report = build_report("main", tmp_path / "report", repo=repo, run_url="https://example.invalid/run/1")
    md = report.read_text()
    metrics = md.split("### Metrics (changed)")[1].split("###")[0]
    rows = [r for r in metrics.splitlines() if r.startswith("| metrics")]
    assert [r.split("|")[2].strip() for r in rows] == ["pin.miou", "pin.p50"]  # sorted; raw unchanged
    assert "train.lr" in md.split("### Params (changed)")[1]
    assert "![plots diff](./plots_diff.png)" in md
    assert Image.open(tmp_path / "report" / "plots_diff.png").size[0] > 300
    pics = [line for line in md.splitlines() if line.startswith("![metrics/pic.png")]
    assert len(pics) == 2  # changed: main's and this PR's
    for line in pics:
        assert (tmp_path / "report" / line.split("](./")[1].rstrip(")")).is_file()
    assert (tmp_path / "report" / "plots_html" / "index.html").is_file()
    assert "https://example.invalid/run/1" in md
