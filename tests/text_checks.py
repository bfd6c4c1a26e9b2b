"""Shared checks on pretraining texts, for the product's slot style and the research ones."""
from __future__ import annotations

import random
import re

from pin.vlm.pretrain_text import RELATION, TEXT_MIX, ObjectFact, TextRecipe, make_text


def moved(objs: list[ObjectFact], seed: int) -> list[ObjectFact]:
    """The same objects at other places (names, sizes and appearance levels kept)."""
    rng = random.Random(seed)
    return [ObjectFact(o.name, o.width, o.height, (rng.uniform(0, 224), rng.uniform(0, 224)), o.levels)
            for o in objs]


def assert_only_relations_move(objs: list[ObjectFact], names: list[str], seed: int, kind: str, where: int,
                               slot: str) -> None:
    """Moving every object changes no text but a relation's, and no text carries a coordinate."""
    a, b = moved(objs, where), moved(objs, where + 1000)
    recipe = TextRecipe(mix=(*TEXT_MIX.items(), (RELATION, 0.2)), slot=slot)
    ta = make_text(a, names, random.Random(seed), kind, recipe)
    tb = make_text(b, names, random.Random(seed), kind, recipe)
    if kind != RELATION:
        assert ta == tb
    for t in (ta, tb):  # relations answer yes/no only
        if t.kind == RELATION:
            assert t.answer in (" yes", " no") and not re.search(r"\d", t.prompt)
