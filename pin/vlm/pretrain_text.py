"""Image-level texts for pretraining the offline mini VLM - never a position.

The mini VLM stands in for a caption-trained VLM such as OpenFlamingo: it must recognise and
name objects, answer name-conditioned questions and know the answer format, yet know nothing
about where objects are (that is what PIN unlocks). Every text here is a function of the
*multiset* of objects and of non-positional properties of the named object (its size), so moving
objects around an image cannot change it; ``tests/test_pretrain_text.py`` checks exactly that.

Text kinds (weights in ``TEXT_MIX``):
- caption:  "<image>A photo of a dog, a cup and a kite.<|endofchunk|>" (objects in random order)
- exists:   "<image>Question: is there a cup? Answer: yes<|endofchunk|>" (negatives drawn from
            categories absent from the image)
- count:    "<image>Question: how many objects? Answer: 2<|endofchunk|>" and per category
- slot:     "<image>In the image is a dog located at [x,y,x+w,y+h]<|endofchunk|>": the answer
            format filled with the named object's SIZE (w, h: its width and height in the 224
            frame, multiples of the grid cell) and a corner that is NOT its own:
            ``slot="origin"`` puts it at (0, 0); ``slot="anywhere"`` draws (x, y) uniformly
            from the grid cells where a box of that size fits, from the text's own random
            stream - image-independent noise, the same distribution wherever the object
            really is. It teaches the frozen LM to look up the named object before writing a
            parseable box, without ever saying where it is. With "origin" the LM learns that
            the first two numbers are always 0 and PIN cannot move them; with "anywhere" they
            are free choices that the image does not decide - which is what PIN then decides.
            (An earlier form, " [w,h,n,k]" with counts in the last two slots, left PIN's
            answers stuck at x2 < x1: unparsable.)
            Round-3 styles, each a function of the named object's size, its category count and
            the text's own random numbers only:
            ``"size"``: the corner read from the size, (cell*floor(wc/2), cell*floor(hc/2)) with
            wc, hc the size in cells - image-determined, so the LM learns to read the image
            at x1/y1; ``"mixed"``: that corner in half the texts, the ``anywhere`` corner in the
            other half (image-read, with entropy left for PIN to move); ``"attributes"``:
            " [w,h,a,k]", the earlier positive control's readouts (width, height, area in cells,
            how many objects share the name), not a box; ``"window"``: the size-read corner moved
            by -1, 0 or +1 cell (uniformly, per axis, kept in the frame): image-read like
            ``size`` but with no single most likely corner for greedy decoding to lock onto.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from pin.frame import FRAME

IMAGE_TOKEN = "<image>"
END_TOKEN = "<|endofchunk|>"
PROMPT = "In the image is a {obj} located at"

TEXT_MIX = {"caption": 0.2, "exists": 0.35, "count": 0.15, "slot": 0.3}  # = params pretrain.text_mix
# Coarse relations between two named objects ("is the dog left of the cup?"), as web captions
# carry them - never a coordinate. Off unless a recipe's mix names it; the only kind that reads
# where objects are.
RELATION = "relation"
KINDS = (*TEXT_MIX, RELATION)
SLOT_STYLES = ("origin", "anywhere", "size", "mixed", "attributes", "window", "appearance")


def check_text_kinds(kinds: Iterable[str]) -> None:
    """Every kind must be one this module writes (the weights themselves are checked by params)."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown text kinds {unknown}; known: {sorted(KINDS)}")


@dataclass(frozen=True)
class TextRecipe:
    """How texts are drawn: the mix of kinds, where slot boxes are anchored, the grid cell."""

    mix: tuple[tuple[str, float], ...] = tuple(TEXT_MIX.items())
    slot: str = "appearance"  # = params pretrain.slot
    frame: int = FRAME
    cell: int = FRAME // 8  # FRAME / compose.grid

    def __post_init__(self):
        check_text_kinds(k for k, _ in self.mix)
        if self.slot not in SLOT_STYLES:
            raise ValueError(f"slot must be one of {SLOT_STYLES}, got {self.slot!r}")


@dataclass(frozen=True)
class ObjectFact:
    """What pretraining may know about an object: its name and its size; its centre is read by
    the relation kind only (and compared, never written)."""

    name: str
    width: int  # in the 224 frame
    height: int
    centre: tuple[float, float] | None = None  # in the 224 frame; None where relations are unused
    levels: tuple[int, ...] = ()  # appearance levels (a, s) from compose; never a position


@dataclass(frozen=True)
class PretrainText:
    kind: str
    prompt: str  # conditioning text, loss-masked
    answer: str  # supervised text; the adapter appends its end token (END_TOKEN) when training

    @property
    def text(self) -> str:
        return self.prompt + self.answer + END_TOKEN


def _article_list(names: list[str]) -> str:
    parts = [f"a {n}" for n in names]
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def slot_answer(obj: ObjectFact, rng: random.Random | None = None, recipe: TextRecipe = TextRecipe(),
                count: int = 1) -> str:
    """The slot text for ``obj``; ``count``: how many objects in the image share its name."""
    cell = recipe.cell
    if recipe.slot == "attributes":
        area = max(round(obj.width / cell), 1) * max(round(obj.height / cell), 1)
        return f" [{obj.width},{obj.height},{area},{count}]"
    style = recipe.slot
    if style in ("anywhere", "mixed", "window") and rng is None:
        raise ValueError(f"slot={style!r} needs a random stream")
    if style == "mixed":
        style = "size" if rng.random() < 0.5 else "anywhere"
    x = y = 0
    if style == "anywhere":
        x = cell * rng.randrange(max(recipe.frame - obj.width, 0) // cell + 1)
        y = cell * rng.randrange(max(recipe.frame - obj.height, 0) // cell + 1)
    elif style == "size":
        x = cell * (round(obj.width / cell) // 2)
        y = cell * (round(obj.height / cell) // 2)
    elif style == "appearance":  # the corner is read from the object's own appearance levels
        if len(obj.levels) != 2:
            raise ValueError("pretrain.slot=appearance needs objects with appearance levels "
                             "(compose.appearance: pretrain or all)")
        x, y = cell * obj.levels[0], cell * obj.levels[1]
    elif style == "window":
        last = recipe.frame // cell - 1
        x = cell * min(max(round(obj.width / cell) // 2 + rng.choice((-1, 0, 1)), 0), last)
        y = cell * min(max(round(obj.height / cell) // 2 + rng.choice((-1, 0, 1)), 0), last)
    return f" [{x},{y},{x + obj.width},{y + obj.height}]"


def make_text(
    objects: list[ObjectFact], vocabulary: list[str], rng: random.Random, kind: str | None = None,
    recipe: TextRecipe = TextRecipe(),
) -> PretrainText:
    """One pretraining text for an image holding ``objects`` (order irrelevant)."""
    if not objects:
        raise ValueError("an image needs at least one object")
    # Sorting first makes the output independent of the order objects were pasted in.
    objects = sorted(objects, key=lambda o: (o.name, o.width, o.height, o.levels))  # never by centre
    if kind is None:
        kind = rng.choices([k for k, _ in recipe.mix], weights=[w for _, w in recipe.mix])[0]
    names = [o.name for o in objects]
    if kind == "caption":
        shuffled = names[:]
        rng.shuffle(shuffled)
        return PretrainText(kind, IMAGE_TOKEN + "A photo of", " " + _article_list(shuffled) + ".")
    if kind == "exists":
        present = sorted(set(names))
        absent = [v for v in vocabulary if v not in present]
        if absent and rng.random() < 0.5:
            name, ans = rng.choice(absent), "no"
        else:
            name, ans = rng.choice(present), "yes"
        return PretrainText(kind, f"{IMAGE_TOKEN}Question: is there a {name}? Answer:", f" {ans}")
    if kind == "count":
        counts = Counter(names)
        if rng.random() < 0.5:
            return PretrainText(kind, f"{IMAGE_TOKEN}Question: how many objects? Answer:", f" {len(names)}")
        name = rng.choice(sorted(counts))
        return PretrainText(kind, f"{IMAGE_TOKEN}Question: how many {name}? Answer:", f" {counts[name]}")
    if kind == "slot":
        obj = rng.choice(objects)
        return PretrainText(kind, IMAGE_TOKEN + PROMPT.format(obj=obj.name),
                            slot_answer(obj, rng, recipe, count=names.count(obj.name)))
    if kind == RELATION:
        return relation_text(objects, vocabulary, rng, recipe)
    raise ValueError(f"unknown text kind {kind!r}")


def relation_text(objects: list[ObjectFact], vocabulary: list[str], rng: random.Random,
                  recipe: TextRecipe) -> PretrainText:
    """ "Question: is the dog left of the cup? Answer: yes" for two objects whose names are unique
    in the image and whose centres differ by at least one grid cell along the asked axis; an
    image without such a pair gets an exists question instead."""
    counts = Counter(o.name for o in objects)
    unique = [o for o in objects if counts[o.name] == 1 and o.centre is not None]
    pairs = [(a, b, axis) for a in unique for b in unique if a is not b for axis in (0, 1)
             if abs(a.centre[axis] - b.centre[axis]) >= recipe.cell]
    if not pairs:
        return make_text(objects, vocabulary, rng, "exists", recipe)
    a, b, axis = rng.choice(pairs)
    word = ("left of", "above")[axis]
    answer = "yes" if a.centre[axis] < b.centre[axis] else "no"
    return PretrainText(RELATION, f"{IMAGE_TOKEN}Question: is the {a.name} {word} the {b.name}? Answer:", f" {answer}")


def words_of(texts_vocabulary: list[str]) -> list[str]:
    """Every word the pretraining texts can use, for building the mini VLM's tokenizer."""
    fixed = "a photo of and question is there answer yes no how many objects in the image located at left above".split()
    words = set(fixed)
    for name in texts_vocabulary:
        words.update(name.split())
    return sorted(words)
