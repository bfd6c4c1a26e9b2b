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
            frame) and a corner that is NOT its own. Which corner is the slot *style*
            (``pretrain.slot``, a :class:`SlotStyle` in ``SLOT_STYLES``). The product registers one:
            ``"appearance"``, the corner read from the named object's appearance levels (a, s)
            (``compose.appearance``): cell*a, cell*s - image-read, never a position, and movable by
            a positional insert that adds a code to the object's own patch features. It teaches the
            frozen LM to look up the named object before writing a parseable box.
            The styles that lost in the research rounds (origin, anywhere, size, mixed, attributes,
            window; docs/mini_vlm.md) live in ``research/slot_styles.py``, which registers them
            when imported.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable
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
        slot_style(self.slot)


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


@dataclass(frozen=True)
class SlotStyle:
    """One answer format of the slot kind (``pretrain.slot``): how the answer text for the named
    object is built from its size, its appearance levels, how many objects share its name and,
    where ``needs_rng``, the text's own random stream - never from where the object is."""

    name: str
    # (obj, rng, recipe, count) -> the answer text, e.g. " [x1,y1,x2,y2]"; rng is None only where
    # the style does not need one
    answer: Callable[[ObjectFact, random.Random | None, TextRecipe, int], str]
    needs_rng: bool = False
    box: bool = True  # False: not a box; the answer's first two numbers are the size (pin.vlm.pretrain._slot_size)


SLOT_STYLES: dict[str, SlotStyle] = {}  # = the styles pretrain.slot may name


def register_slot_style(style: SlotStyle) -> SlotStyle:
    """Add ``style`` to ``SLOT_STYLES``; a name can be registered once."""
    if style.name in SLOT_STYLES:
        raise ValueError(f"slot style {style.name!r} is already registered")
    SLOT_STYLES[style.name] = style
    return style


def slot_style(name: str) -> SlotStyle:
    """The registered style ``name``; a ValueError naming the registered ones otherwise."""
    try:
        return SLOT_STYLES[name]
    except KeyError:
        raise ValueError(f"unknown slot style {name!r}; registered: {', '.join(sorted(SLOT_STYLES))} (the research "
                         "styles of docs/mini_vlm.md are registered by `import research.slot_styles`)") from None


def box_answer(obj: ObjectFact, x: int, y: int) -> str:
    """The box answer of ``obj``'s size with its corner at (x, y)."""
    return f" [{x},{y},{x + obj.width},{y + obj.height}]"


def _appearance_answer(obj: ObjectFact, rng: random.Random | None, recipe: TextRecipe, count: int) -> str:
    # the corner is read from the object's own appearance levels
    if len(obj.levels) != 2:
        raise ValueError("pretrain.slot=appearance needs objects with appearance levels "
                         "(compose.appearance: pretrain or all)")
    return box_answer(obj, recipe.cell * obj.levels[0], recipe.cell * obj.levels[1])


register_slot_style(SlotStyle("appearance", _appearance_answer))


def slot_answer(obj: ObjectFact, rng: random.Random | None = None, recipe: TextRecipe = TextRecipe(),
                count: int = 1) -> str:
    """The slot text for ``obj``; ``count``: how many objects in the image share its name."""
    style = slot_style(recipe.slot)
    if style.needs_rng and rng is None:
        raise ValueError(f"slot={style.name!r} needs a random stream")
    return style.answer(obj, rng, recipe, count)


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
