"""Continue a saved mini VLM's language pretraining: more texts for the same model.

Name binding needs about a million texts (docs/mini_vlm.md), more than one CPU run affords. A
saved model is continued with the stage's own text batches and language loop
(:func:`pin.vlm.pretrain.pretrain_language`), a new seed (new batches) and a fresh one-cycle
schedule - a warm restart, recorded as one more ``language.segments`` entry in the model's
``pretrain_metrics``. The vision tower, the text recipe and the vocabulary stay the saved model's.
``scripts/build_mini_vlm.py --then`` builds the shipped asset this way; research/continue_pretrain.py
continues any model folder.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from pin.composed import ComposedImage
from pin.frame import FRAME
from pin.vlm.pretrain import facts_of, features_of, pixels_uint8, pretrain_language, recognition_report
from pin.vlm.pretrain_text import TextRecipe


def saved_recipe(metrics: dict, grid: int) -> TextRecipe:
    """The text recipe a saved mini VLM was pretrained with (its ``pretrain_metrics``)."""
    return TextRecipe(mix=tuple(metrics["recipe"]["text_mix"].items()), slot=metrics["recipe"]["slot"],
                      frame=FRAME, cell=FRAME // grid)


def continue_language(model: str | Path, out: str | Path, images: list[ComposedImage], probe: list[ComposedImage],
                      *, steps: int, seed: int, lr: float = 0.002, batch_size: int = 64, grid: int = 8,
                      pixels: tuple[torch.Tensor, torch.Tensor] | None = None, label: str | None = None) -> dict:
    """Pretrain the mini VLM in ``model`` on ``steps`` more text batches of ``images`` and save it
    to ``out`` (may be ``model``: it is read whole first). ``pixels``: (images, probe) uint8 at the
    model's input size if already decoded. ``label`` names the starting point in the new segment
    (default: the folder). Returns the new ``language`` record, the recognition before and after
    on ``probe``, and the seconds the language loop took."""
    from pin.vlm.mini import load_mini_parts, read_mini_config, save_mini
    from pin.vlm.openflamingo import OpenFlamingoAdapter

    torch.manual_seed(seed)
    flamingo, processor, tokenizer, config = load_mini_parts(str(model))
    meta = read_mini_config(str(model))["meta"]
    before = meta["pretrain_metrics"]
    recipe = saved_recipe(before, grid)
    vocabulary = meta["vocabulary"]
    adapter = OpenFlamingoAdapter(flamingo, processor, tokenizer, name="mini")  # freezes everything
    u8, probe_u8 = pixels if pixels is not None else (pixels_uint8(config.image_size, images),
                                                       pixels_uint8(config.image_size, probe))
    feats, probe_feats = features_of(adapter, u8), features_of(adapter, probe_u8)
    facts, probe_facts = [facts_of(im) for im in images], [facts_of(im) for im in probe]
    t0 = time.perf_counter()
    lang = pretrain_language(adapter, flamingo, feats, facts, vocabulary, steps=steps, lr=lr,
                             batch_size=batch_size, seed=seed, recipe=recipe)
    seconds = time.perf_counter() - t0
    flamingo.eval()
    report = recognition_report(adapter, probe_feats, probe_facts, vocabulary, seed=0, recipe=recipe)
    steps_before = before["language"]["steps"]
    segments = before["language"].get("segments", [{"steps": steps_before, "batch": None, "seed": 0}])
    language = {"steps": steps_before + steps, "final_loss": round(lang.final_loss, 4),
                "segments": segments + [{"steps": steps, "batch": batch_size, "lr": lr, "seed": seed,
                                         "from": label or str(model)}]}
    save_mini(str(out), flamingo, tokenizer, config,
              meta={**meta, "pretrain_metrics": {**before, "language": language, "recognition_heldout": report}})
    return {"language": language, "recognition_before": before.get("recognition_heldout"),
            "recognition_after": report, "seconds": round(seconds)}
