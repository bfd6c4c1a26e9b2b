"""DVC stage `figures`: pictures of the trained method and its training run (pin.viz.figures).

    python stages/figures.py
Writes metrics/plots/pin_similarity.png (the paper's Figure 9), metrics/similarity.json (its maps
as numbers) and metrics/plots/train_curves.png (from the train stage's dvclive series).
"""
from __future__ import annotations

from pin import params
from pin.errors import PinError
from pin.stage import run_stage

METHOD_DIR = "models/pin"  # the train stage's output: whichever method it trained


def main() -> str:
    from pin.composed import read_split_records
    from pin.methods import METHODS, load_method
    from pin.viz.figures import run_figures
    from pin.viz.similarity import PAPER_IMAGES
    from pin.vlm.registry import load_vlm

    raw = params.load_yaml()
    wanted = params.parse_method(raw, METHODS)
    vlm = load_vlm(params.parse_section("vlm", raw.get("vlm")))
    method = load_method(METHOD_DIR, vlm)
    if method.name != wanted:
        raise PinError(f"{METHOD_DIR} holds method {method.name!r} but params say method={wanted!r}: "
                       "run the train stage (dvc repro train)")
    images = read_split_records("data/composed/val", limit=PAPER_IMAGES)
    return run_figures(vlm, method, images, params.parse_section("pin", raw.get("pin")))


if __name__ == "__main__":
    run_stage("figures", main)
