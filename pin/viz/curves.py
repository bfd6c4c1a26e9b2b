"""Training curves as a PNG, from the TSV files dvclive writes (``<live>/plots/metrics/**.tsv``).

``dvc plots show`` draws the same files interactively; the PNG is for a pull-request comment, a
README or a quick look without a browser.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from pin.errors import PinError
from pin.io import atomic_write_bytes


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


def training_curves(metrics_dir: str | Path, path: str | Path, title: str = "PIN training") -> str:
    """Loss (raw and EMA) and throughput against step. Returns a one-line description."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = read_live(metrics_dir)
    loss_keys = [k for k in series if k.rsplit("/", 1)[-1].startswith("loss")]
    other = [k for k in series if k not in loss_keys and k.rsplit("/", 1)[-1] != "lr"]
    fig = Figure(figsize=(9, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    for k in loss_keys:
        steps, values = series[k]
        raw = k.endswith("/loss") or k == "loss"
        ax.plot(steps, values, label=k, alpha=0.45 if raw else 1.0, linewidth=1 if raw else 2)
    ax.set_xlabel("step")
    ax.set_ylabel("next-token loss on the box answer")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if loss_keys:
        ax.legend(fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    for k in other:
        ax2.plot(*series[k], label=k)
    ax2.set_xlabel("step")
    ax2.set_ylabel("training samples / s" if other else "")
    ax2.set_title("throughput" if other else "(no other series)", fontsize=10)
    ax2.grid(alpha=0.3)
    if other:
        ax2.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    parts = []
    for k in loss_keys:
        steps, values = series[k]
        if values:
            parts.append(f"{k} {values[0]:.3f} -> {values[-1]:.3f} over {int(steps[-1])} steps")
    return "; ".join(parts) or "no loss series"
