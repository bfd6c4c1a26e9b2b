"""DVC stage `figures`: pictures of the trained insert and its training run.

    python stages/figures.py
Writes metrics/plots/pin_similarity.png (the paper's Figure 9: cosine similarity between patch
positions of the raw sinusoidal table S, of the frozen encoder's features over 50 images, and of
the learned pi), metrics/similarity.json (those maps as numbers) and
metrics/plots/train_curves.png (from the dvclive series of the train stage).
"""
from __future__ import annotations

from pin import params
from pin.stage import run_stage

OUTPUTS = ["metrics/plots/pin_similarity.png", "metrics/similarity.json", "metrics/plots/train_curves.png"]


def main() -> str:
    from pin.composed import read_split
    from pin.insert import PositionalInsert
    from pin.io import atomic_write_json
    from pin.viz.curves import training_curves
    from pin.viz.similarity import PAPER_IMAGES, write_similarity
    from pin.vlm.registry import load_vlm

    vlm = load_vlm(params.load("vlm"))
    insert = PositionalInsert.from_pretrained("models/pin").eval()
    images = read_split("data/composed/val", limit=PAPER_IMAGES)
    stats = write_similarity(insert, OUTPUTS[0], vlm, images)
    atomic_write_json(OUTPUTS[1], stats)
    curves = training_curves("metrics/train_live/plots/metrics", OUTPUTS[2])
    near = ", ".join(f"{k} {v['neighbours']:.2f}/{v['other']:.2f}" for k, v in stats.items())
    return f"similarity with 4-neighbours/far patches: {near}; {curves}"


if __name__ == "__main__":
    run_stage("figures", main)
