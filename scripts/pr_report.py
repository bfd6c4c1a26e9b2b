"""The pull-request report: metrics, params and plots of the working tree against a revision.

    python scripts/pr_report.py [REV=main] [OUT=report]   # writes OUT/report.md + pictures + plots HTML

What ``.github/workflows/pr.yml`` posts as a comment (with CML) after ``dvc repro``:

* ``dvc metrics diff --md <rev>`` and ``dvc params diff --md <rev>`` with their rows sorted (DVC's
  order depends on how it walks the files; a sorted table diffs cleanly between two comments);
* the line plots of ``dvc plots diff <rev> --json`` drawn as one PNG (every revision a line), so
  the comment shows them as a picture - GitHub cannot run the vega scripts;
* each image plot (gallery, Figure 9, training curves) of both revisions, or one when unchanged;
* ``dvc plots diff <rev> -o <out>/plots_html``: the interactive page, drawn offline with the
  project's template, for the workflow's artifact.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pin.io import atomic_write_text  # noqa: E402
from pin.viz.png import figure, save_png  # noqa: E402

WORKSPACE = "workspace"


def sort_md_tables(md: str) -> str:
    """Sort the body rows of every markdown table in ``md`` (header and separator kept)."""
    lines = md.splitlines()
    out, i = [], 0
    while i < len(lines):
        is_table = (i + 1 < len(lines) and lines[i].lstrip().startswith("|")
                    and re.fullmatch(r"\s*\|(\s*:?-+:?\s*\|)+\s*", lines[i + 1]))
        if not is_table:
            out.append(lines[i])
            i += 1
            continue
        out += lines[i:i + 2]
        j = i + 2
        while j < len(lines) and lines[j].lstrip().startswith("|"):
            j += 1
        out += sorted(lines[i + 2:j], key=lambda row: [c.strip() for c in row.strip().strip("|").split("|")])
        i = j
    return "\n".join(out) + ("\n" if md.endswith("\n") else "")


def _table_or_nothing(md: str) -> str:
    """``md`` sorted, or "" when its tables have no rows (DVC prints a bare header then)."""
    md = sort_md_tables(md).strip()
    rows = [ln for ln in md.splitlines() if ln.lstrip().startswith("|")]
    return md if len(rows) > 2 else ""


def _dvc() -> str:
    here = Path(sys.executable).parent / "dvc"
    return str(here) if here.exists() else (shutil.which("dvc") or "dvc")


def run_dvc(*args: str, cwd: str | Path = ".") -> str:
    proc = subprocess.run([_dvc(), *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc.stdout


def line_series(plots_json: dict) -> dict[str, dict[str, tuple[str, str, list[float], list[float]]]]:
    """``dvc plots diff --json`` vega entries -> {plot: {rev: (x_field, y_field, xs, ys)}}."""
    out: dict[str, dict] = {}
    for name, entries in (plots_json.get("data") or {}).items():
        for e in entries:
            if e.get("type") != "vega":
                continue
            content = e.get("content") or {}
            values = (content.get("data") or {}).get("values") or []
            x = ((content.get("encoding") or {}).get("x") or {}).get("field", "step")
            for rev in e.get("revisions") or []:
                rows = [v for v in values if v.get("rev") == rev]
                ys = [k for k in (rows[0] if rows else {}) if k not in (x, "rev", "dvc_inferred_y_value",
                                                                       "filename", "field")]
                if not rows or not ys:
                    continue
                y = ys[0]
                try:
                    pts = sorted((float(r[x]), float(r[y])) for r in rows)
                except (KeyError, TypeError, ValueError):
                    continue
                out.setdefault(name, {})[rev] = (x, y, [p[0] for p in pts], [p[1] for p in pts])
    return out


def plot_lines(series: dict, path: str | Path, labels: dict[str, str] | None = None) -> bool:
    """One subplot per line plot, one line per revision; False when there is nothing to draw."""
    if not series:
        return False
    labels = labels or {}
    n = len(series)
    cols = min(2, n)
    rows = -(-n // cols)
    fig = figure((5.2 * cols, 3.2 * rows))
    for k, (name, revs) in enumerate(sorted(series.items())):
        ax = fig.add_subplot(rows, cols, k + 1)
        # the base revision wide and light underneath, this PR thin on top: equal curves show both
        for rev, (x, y, xs, ys) in sorted(revs.items(), key=lambda kv: kv[0] == WORKSPACE):
            ax.plot(xs, ys, label=labels.get(rev, rev), linewidth=1.3 if rev == WORKSPACE else 4,
                    alpha=1.0 if rev == WORKSPACE else 0.35)
            ax.set_xlabel(x)
            ax.set_ylabel(y)
        ax.set_title(name, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
    return True


def image_plots(plots_json: dict) -> dict[str, dict[str, str]]:
    """Image entries of ``dvc plots diff --json -o DIR`` -> {plot: {rev: file}}."""
    out: dict[str, dict[str, str]] = {}
    for name, entries in (plots_json.get("data") or {}).items():
        for e in entries:
            if e.get("type") == "image" and e.get("url"):
                for rev in e.get("revisions") or []:
                    out.setdefault(name, {})[rev] = e["url"]
    return out


def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build_report(rev: str, out_dir: str | Path, repo: str | Path = ".", run_url: str | None = None) -> Path:
    """Write ``out_dir/report.md`` (pictures next to it, linked relatively) and ``out_dir/plots_html``."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = {WORKSPACE: "this PR", rev: rev}
    parts = [f"## PIN pipeline: this PR vs `{rev}`", "",
             "Offline default reproduced from scratch (`dvc repro`).", ""]

    metrics = _table_or_nothing(run_dvc("metrics", "diff", "--md", rev, cwd=repo))
    parts += ["### Metrics (changed)", "", metrics or "No metric changed.", ""]
    params = _table_or_nothing(run_dvc("params", "diff", "--md", rev, cwd=repo))
    parts += ["### Params (changed)", "", params or "No parameter changed.", ""]

    static = out_dir / "plots_static"
    data = json.loads(run_dvc("plots", "diff", rev, "--json", "-o", str(static), cwd=repo))
    if plot_lines(line_series(data), out_dir / "plots_diff.png", labels):
        parts += [f"### Training curves ({rev} and this PR)", "", "![plots diff](./plots_diff.png)", ""]
    images = image_plots(data)
    if images:
        parts += ["### Pictures", ""]
    for name, by_rev in sorted(images.items()):
        parts += [f"#### `{name}`", ""]
        files = {r: by_rev[r] for r in (rev, WORKSPACE) if r in by_rev}
        if len(files) == 2 and _digest(files[rev]) == _digest(files[WORKSPACE]):
            files = {WORKSPACE: files[WORKSPACE]}
            parts += ["Unchanged.", ""]
        for r, src in files.items():
            rel = os.path.relpath(src, out_dir)
            parts += [f"{labels.get(r, r)}:", "", f"![{name} ({labels.get(r, r)})](./{rel})", ""]

    run_dvc("plots", "diff", rev, "-o", str(out_dir / "plots_html"), cwd=repo)
    where = f"the [workflow run]({run_url})'s artifact" if run_url else "the workflow's artifact"
    parts += ["Interactive plots: `plots_html/index.html` in " + where + " (draws offline).", ""]
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(parts))
    return report


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Markdown report of this working tree against a revision.")
    ap.add_argument("rev", nargs="?", default="main", help="git revision to compare with (default main)")
    ap.add_argument("out", nargs="?", default="report", help="output folder (default report/)")
    args = ap.parse_args(argv)
    server, repo, run = (os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    url = f"{server}/{repo}/actions/runs/{run}" if server and repo and run else None
    try:
        print(build_report(args.rev, args.out, run_url=url))
    except (RuntimeError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
