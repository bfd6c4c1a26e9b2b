"""The figures stage: pictures of the trained method and its training run.

* ``pin_similarity.png``: the paper's Figure 9, cosine similarity between patch positions of the
  raw sinusoidal table S, of the frozen encoder's features over 50 images, and of the learned
  pi (left out when the trained method is not PIN: nothing learned pi);
* ``similarity.json``: those maps as numbers (:func:`pin.viz.similarity.locality`);
* ``train_curves.png``: the loss curves of the train stage's dvclive log, or, for a method that
  trains nothing (``Method.trains`` is False), a picture that says so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pin.io import atomic_write_json
from pin.viz.curves import no_training_curves, training_curves
from pin.viz.similarity import write_similarity


def figure9_insert(method, vlm, pin_p):
    """The insert Figure 9 draws: the trained one of a PIN run; for another method an untrained
    insert of the ``pin`` params' shape, whose table S (and the encoder panel) are still drawn."""
    from pin.insert import InsertConfig, PositionalInsert

    insert = getattr(method, "insert", None)
    if isinstance(insert, PositionalInsert):
        return insert.eval(), True
    config = InsertConfig.for_site(vlm.site, layers=pin_p.layers, table=pin_p.table)
    return PositionalInsert(config).eval(), False


def run_figures(vlm, method, images: Sequence, pin_p,
                live_dir: str | Path = "metrics/train_live/plots/metrics",
                similarity_png: str | Path = "metrics/plots/pin_similarity.png",
                similarity_json: str | Path = "metrics/similarity.json",
                curves_png: str | Path = "metrics/plots/train_curves.png") -> str:
    """Write the three outputs for the trained ``method`` (a :class:`pin.methods.Method`) on
    ``vlm``; ``images`` (composed validation images) feed the encoder panel; ``pin_p`` (the ``pin``
    params: layers, table) shapes the insert when the method is not PIN. Returns a summary line."""
    insert, trained = figure9_insert(method, vlm, pin_p)
    stats = write_similarity(insert, similarity_png, vlm, images, trained=trained)
    atomic_write_json(similarity_json, stats)
    if method.trains:
        curves = training_curves(live_dir, curves_png)
    else:
        curves = no_training_curves(method.name, curves_png)
    near = ", ".join(f"{k} {v['neighbours']:.2f}/{v['other']:.2f}" for k, v in stats.items())
    return f"similarity with 4-neighbours/far patches: {near}; {curves}"
