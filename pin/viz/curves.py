"""Training curves as a PNG, from the TSV files dvclive writes (``<live>/plots/metrics/**.tsv``).

``dvc plots show`` draws the same files interactively; the PNG is for a pull-request comment, a
README or a quick look without a browser. It shows results only: the loss (raw and EMA) and the
learning rate it was trained with. A series of wall-clock numbers (throughput, seconds) differs
on every run, so a picture of it would change the committed PNG on every ``dvc repro``; such
series are left out even when a log has them.
"""
from __future__ import annotations

import csv
from pathlib import Path

from pin.errors import PinError
from pin.viz.png import figure, save_png


def read_tsv_series(path: str | Path) -> tuple[str, list[float], list[float]]:
    """A dvclive TSV (header ``step<TAB>name``) -> ``(name, steps, values)``."""
    path = Path(path)
    with path.open(newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows or len(rows[0]) < 2 or rows[0][0] != "step":
        raise PinError(f"{path}: not a dvclive TSV (want a 'step<TAB>name' header)")
    name = rows[0][1]
    steps, values = [], []
    for row in rows[1:]:
        if len(row) >= 2 and row[0] and row[1]:
            steps.append(float(row[0]))
            values.append(float(row[1]))
    return name, steps, values


def read_live(metrics_dir: str | Path) -> dict[str, tuple[list[float], list[float]]]:
    """Every series under a dvclive ``plots/metrics`` folder, keyed by path without ``.tsv``
    (``train/loss``)."""
    root = Path(metrics_dir)
    files = sorted(root.rglob("*.tsv"))
    if not files:
        raise PinError(f"{root}: no dvclive .tsv series (run `dvc repro train` first)")
    out = {}
    for f in files:
        _, steps, values = read_tsv_series(f)
        out[f.relative_to(root).with_suffix("").as_posix()] = (steps, values)
    return out


def _leaf(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def training_curves(metrics_dir: str | Path, path: str | Path, title: str = "PIN training") -> str:
    """Loss (raw and EMA) and learning rate against step. Returns a one-line description."""
    series = read_live(metrics_dir)
    loss_keys = [k for k in series if _leaf(k).startswith("loss")]
    lr_keys = [k for k in series if _leaf(k) == "lr"]
    fig = figure((9, 3.4))
    ax = fig.add_subplot(1, 2, 1)
    for k in loss_keys:
        steps, values = series[k]
        raw = _leaf(k) == "loss"
        ax.plot(steps, values, label=k, alpha=0.45 if raw else 1.0, linewidth=1 if raw else 2)
    ax.set_xlabel("step")
    ax.set_ylabel("next-token loss on the box answer")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if loss_keys:
        ax.legend(fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    for k in lr_keys:
        ax2.plot(*series[k], label=k)
    ax2.set_xlabel("step")
    ax2.set_ylabel("learning rate" if lr_keys else "")
    ax2.set_title("learning-rate schedule" if lr_keys else "(no learning-rate series)", fontsize=10)
    ax2.grid(alpha=0.3)
    if lr_keys:
        ax2.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
    parts = []
    for k in loss_keys:
        steps, values = series[k]
        if values:
            parts.append(f"{k} {values[0]:.3f} -> {values[-1]:.3f} over {int(steps[-1])} steps")
    return "; ".join(parts) or "no loss series"


def no_training_curves(method: str, path: str | Path) -> str:
    """The curves picture of a method that trains nothing says so (the output exists for every
    method). Returns a one-line description."""
    fig = figure((6, 2))
    fig.text(0.5, 0.5, f"method {method} trains nothing: no training curve", ha="center", va="center")
    save_png(fig, path)
    return f"method {method} trained nothing: no curves"
