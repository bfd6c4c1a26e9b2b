"""DVC stage `figures`: pictures of the trained insert and its training run.

    python stages/figures.py
Writes metrics/plots/pin_similarity.png (the paper's Figure 9: cosine similarity between patch
positions of the raw sinusoidal table S, of the frozen encoder's features over 50 images, and of
the learned pi - left out when ``method`` is not pin), metrics/similarity.json (those maps as numbers) and
metrics/plots/train_curves.png (from the dvclive series of the train stage).
"""
from __future__ import annotations

import io
from pathlib import Path

from pin import params
from pin.stage import run_stage

OUTPUTS = ["metrics/plots/pin_similarity.png", "metrics/similarity.json", "metrics/plots/train_curves.png"]


def no_training_picture(method: str, path: str) -> str:
    """The curves picture of a run that trained nothing says so (the output exists for every method)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from pin.io import atomic_write_bytes

    fig = Figure(figsize=(6, 2))
    fig.text(0.5, 0.5, f"method {method} trains nothing: no training curve", ha="center", va="center")
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())
    return f"method {method} trained nothing: no curves"


def main() -> str:
    from pin.composed import read_split
    from pin.insert import PositionalInsert
    from pin.io import atomic_write_json
    from pin.viz.curves import training_curves
    from pin.viz.similarity import PAPER_IMAGES, write_similarity
    from pin.vlm.registry import load_vlm

    raw = params.load_yaml()
    vlm = load_vlm(params.parse_section("vlm", raw.get("vlm")))
    method = params.parse_method(raw)
    if method == "pin":
        insert = PositionalInsert.from_pretrained("models/pin").eval()
    else:  # another method's run: Figure 9 without a learned pi (the table S and the encoder only)
        from pin.insert import InsertConfig

        pin_p = params.parse_section("pin", raw.get("pin"))
        insert = PositionalInsert(InsertConfig.for_site(vlm.site, layers=pin_p.layers, table=pin_p.table)).eval()
    images = read_split("data/composed/val", limit=PAPER_IMAGES)
    stats = write_similarity(insert, OUTPUTS[0], vlm, images, trained=method == "pin")
    atomic_write_json(OUTPUTS[1], stats)
    if (Path("models/pin") / "config.json").is_file() and not any(Path("metrics/train_live/plots/metrics").rglob("*.tsv")):
        curves = no_training_picture(method, OUTPUTS[2])  # incontext, raw, random: nothing trained
    else:
        curves = training_curves("metrics/train_live/plots/metrics", OUTPUTS[2])
    near = ", ".join(f"{k} {v['neighbours']:.2f}/{v['other']:.2f}" for k, v in stats.items())
    return f"similarity with 4-neighbours/far patches: {near}; {curves}"


if __name__ == "__main__":
    run_stage("figures", main)
