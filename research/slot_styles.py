"""The slot styles that lost: answer formats of the mini VLM's slot texts from the research rounds.

``pretrain.slot`` names how the slot text ("<image>In the image is a dog located at [x,y,x+w,y+h]")
fills its answer (:mod:`pin.vlm.pretrain_text`). The product ships one style, ``appearance`` (the
corner read from the named object's appearance levels). The six here were measured against it in
the research rounds and lost; their rows stay in docs/mini_vlm.md. Each is a function of the named
object's size, how many objects share its name and the text's own random numbers only - never of
where the object is:

- ``origin``: the size at the corner (0, 0). The LM learns that the first two numbers are always
  0, and PIN cannot move them.
- ``anywhere``: the size at a corner drawn uniformly from the grid cells where a box of that size
  fits, from the text's own random stream - image-independent noise, the same distribution
  wherever the object really is: free choices that the image does not decide.
- ``size``: the corner read from the size, (cell*floor(wc/2), cell*floor(hc/2)) with wc, hc the
  size in cells - image-determined, so the LM learns to read the image at x1/y1.
- ``mixed``: the ``size`` corner in half the texts, the ``anywhere`` corner in the other half
  (image-read, with entropy left for PIN to move).
- ``attributes``: " [w,h,a,k]", the earlier positive control's readouts (width, height, area in
  cells, how many objects share the name), not a box.
- ``window``: the ``size`` corner moved by -1, 0 or +1 cell (uniformly, per axis, kept in the
  frame): image-read like ``size`` but with no single most likely corner for greedy decoding to
  lock onto.

(An earlier form, " [w,h,n,k]" with counts in the last two slots, left PIN's answers stuck at
x2 < x1: unparsable.)

Importing this module registers the six in ``pin.vlm.pretrain_text.SLOT_STYLES``, so a research
script that uses one (``-S slot=mixed``, a saved model pretrained with one) starts with

    import research.slot_styles  # noqa: F401  registers the research slot styles
"""
from __future__ import annotations

import random

from pin.vlm.pretrain_text import ObjectFact, SlotStyle, TextRecipe, box_answer, register_slot_style


def _origin(obj: ObjectFact, rng: random.Random | None, recipe: TextRecipe, count: int) -> str:
    return box_answer(obj, 0, 0)


def _anywhere_corner(obj: ObjectFact, rng: random.Random, recipe: TextRecipe) -> tuple[int, int]:
    cell = recipe.cell
    x = cell * rng.randrange(max(recipe.frame - obj.width, 0) // cell + 1)
    y = cell * rng.randrange(max(recipe.frame - obj.height, 0) // cell + 1)
    return x, y


def _size_corner(obj: ObjectFact, recipe: TextRecipe) -> tuple[int, int]:
    cell = recipe.cell
    return cell * (round(obj.width / cell) // 2), cell * (round(obj.height / cell) // 2)


def _anywhere(obj: ObjectFact, rng: random.Random | None, recipe: TextRecipe, count: int) -> str:
    return box_answer(obj, *_anywhere_corner(obj, rng, recipe))


def _size(obj: ObjectFact, rng: random.Random | None, recipe: TextRecipe, count: int) -> str:
    return box_answer(obj, *_size_corner(obj, recipe))


def _mixed(obj: ObjectFact, rng: random.Random | None, recipe: TextRecipe, count: int) -> str:
    if rng.random() < 0.5:
        return box_answer(obj, *_size_corner(obj, recipe))
    return box_answer(obj, *_anywhere_corner(obj, rng, recipe))


def _attributes(obj: ObjectFact, rng: random.Random | None, recipe: TextRecipe, count: int) -> str:
    cell = recipe.cell
    area = max(round(obj.width / cell), 1) * max(round(obj.height / cell), 1)
    return f" [{obj.width},{obj.height},{area},{count}]"


def _window(obj: ObjectFact, rng: random.Random | None, recipe: TextRecipe, count: int) -> str:
    cell = recipe.cell
    last = recipe.frame // cell - 1
    x0, y0 = (v // cell for v in _size_corner(obj, recipe))
    x = cell * min(max(x0 + rng.choice((-1, 0, 1)), 0), last)
    y = cell * min(max(y0 + rng.choice((-1, 0, 1)), 0), last)
    return box_answer(obj, x, y)


RESEARCH_SLOT_STYLES = (
    SlotStyle("origin", _origin),
    SlotStyle("anywhere", _anywhere, needs_rng=True),
    SlotStyle("size", _size),
    SlotStyle("mixed", _mixed, needs_rng=True),
    SlotStyle("attributes", _attributes, box=False),
    SlotStyle("window", _window, needs_rng=True),
)
for _style in RESEARCH_SLOT_STYLES:
    register_slot_style(_style)
