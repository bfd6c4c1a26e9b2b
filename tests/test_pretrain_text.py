"""The mini VLM's pretraining texts must never tell it where anything is (issue: mini VLM)."""
import random
import re

from hypothesis import given, settings, strategies as st

import pytest

from pin.vlm.pretrain_text import KINDS, RELATION, TEXT_MIX, ObjectFact, TextRecipe, make_text

NAMES = ["dog", "cup", "kite", "teddy bear", "apple"]

objects_st = st.lists(
    st.tuples(st.sampled_from(NAMES), st.integers(1, 8), st.integers(1, 8)), min_size=1, max_size=3
)


def facts(objs, cell=28):
    return [ObjectFact(n, w * cell, h * cell) for n, w, h in objs]


def corner_draws(obj, slot, n):
    """The (x1, y1) of ``n`` slot texts for ``obj`` drawn from one random stream."""
    rng = random.Random(0)
    return [tuple(int(v) for v in re.findall(r"\d+", make_text(obj, NAMES, rng, "slot",
                                                                 TextRecipe(slot=slot)).answer)[:2])
            for _ in range(n)]


@settings(max_examples=200, deadline=None)
@given(objs=objects_st, seed=st.integers(0, 2**32), kind=st.sampled_from(sorted(TEXT_MIX)),
       perm_seed=st.integers(0, 100))
@pytest.mark.parametrize("slot", ["origin", "anywhere", "size", "mixed", "attributes", "window"])
def test_text_ignores_paste_order_and_position(objs, seed, kind, perm_seed, slot):
    # ObjectFact holds no position at all; what remains to check is that the paste order (which
    # correlates with position in C: later objects are placed around earlier ones) leaks nothing.
    a = facts(objs)
    b = a[:]
    random.Random(perm_seed).shuffle(b)
    recipe = TextRecipe(slot=slot)
    ta = make_text(a, NAMES, random.Random(seed), kind, recipe)
    tb = make_text(b, NAMES, random.Random(seed), kind, recipe)
    assert ta == tb


@settings(max_examples=200, deadline=None)
@given(objs=objects_st, seed=st.integers(0, 2**32))
def test_slot_numbers_are_sizes_only(objs, seed):
    f = facts(objs)
    t = make_text(f, NAMES, random.Random(seed), "slot", TextRecipe(slot="origin"))
    nums = [int(x) for x in re.findall(r"\d+", t.answer)]
    assert len(nums) == 4
    x1, y1, w, h = nums
    assert (x1, y1) == (0, 0)  # anchored at the origin whatever the object's place
    assert (w, h) in {(o.width, o.height) for o in f}


def test_every_kind_ends_with_end_token():
    f = [ObjectFact("dog", 56, 84, levels=(1, 4)), ObjectFact("cup", 28, 28, levels=(0, 7))]
    for kind in TEXT_MIX:
        t = make_text(f, NAMES, random.Random(0), kind)  # the default recipe: the appearance slot
        assert t.text.endswith("<|endofchunk|>") and t.prompt.startswith("<image>")
        assert "<|endofchunk|>" not in t.answer


@settings(max_examples=200, deadline=None)
@given(objs=objects_st, seed=st.integers(0, 2**32))
def test_anywhere_slot_is_a_size_at_a_random_corner(objs, seed):
    # The corner comes from the text's own random stream: a valid, grid-aligned box of the named
    # object's size, drawn from a distribution that does not depend on where the object is.
    f = facts(objs)
    t = make_text(f, NAMES, random.Random(seed), "slot", TextRecipe(slot="anywhere"))
    x1, y1, x2, y2 = (int(v) for v in re.findall(r"\d+", t.answer))
    assert (x2 - x1, y2 - y1) in {(o.width, o.height) for o in f}
    assert 0 <= x1 < x2 <= 224 and 0 <= y1 < y2 <= 224
    assert x1 % 28 == 0 and y1 % 28 == 0


def test_anywhere_corners_cover_every_fitting_cell():
    obj = [ObjectFact("dog", 56, 196)]  # 2 x 7 cells: x1 in 0..6 cells, y1 in 0..1 cells
    corners = set(corner_draws(obj, "anywhere", 400))
    assert corners == {(28 * i, 28 * j) for i in range(7) for j in range(2)}


def test_recipe_rejects_unknown_kinds_and_slots():
    with pytest.raises(ValueError, match="unknown text kinds"):
        TextRecipe(mix=(("gossip", 1.0),))
    with pytest.raises(ValueError, match="slot must be"):
        TextRecipe(slot="center")


@settings(max_examples=200, deadline=None)
@given(objs=objects_st, seed=st.integers(0, 2**32))
def test_size_slot_corner_is_read_from_the_size(objs, seed):
    # The corner is a function of the named object's size: the LM must read the image to write
    # x1/y1, yet the text still says nothing about where the object is.
    f = facts(objs)
    t = make_text(f, NAMES, random.Random(seed), "slot", TextRecipe(slot="size"))
    x1, y1, x2, y2 = (int(v) for v in re.findall(r"\d+", t.answer))
    w, h = x2 - x1, y2 - y1
    assert (w, h) in {(o.width, o.height) for o in f}
    assert (x1, y1) == (28 * (w // 28 // 2), 28 * (h // 28 // 2))


def test_mixed_slot_uses_both_corner_rules():
    obj = [ObjectFact("dog", 56, 84)]  # size corner (28, 28)
    corners = corner_draws(obj, "mixed", 400)
    share = corners.count((28, 28)) / len(corners)
    # half the texts read the size; the other half draw one of 7 x 6 cells (one of them (28, 28))
    assert 0.45 < share < 0.6
    assert len(set(corners)) == 42


@settings(max_examples=100, deadline=None)
@given(objs=objects_st, seed=st.integers(0, 2**32))
def test_attributes_slot_is_size_area_and_name_count(objs, seed):
    f = facts(objs)
    t = make_text(f, NAMES, random.Random(seed), "slot", TextRecipe(slot="attributes"))
    name = t.prompt.split("is a ", 1)[1].rsplit(" located", 1)[0]
    w, h, area, count = (int(v) for v in re.findall(r"\d+", t.answer))
    assert (w, h) in {(o.width, o.height) for o in f if o.name == name}
    assert area == (w // 28) * (h // 28)
    assert count == sum(o.name == name for o in f)


def _moved(objs, dx_seed):
    """The same objects at other places (names and sizes kept)."""
    rng = random.Random(dx_seed)
    return [ObjectFact(o.name, o.width, o.height, (rng.uniform(0, 224), rng.uniform(0, 224))) for o in objs]


@settings(max_examples=200, deadline=None)
@given(objs=objects_st, seed=st.integers(0, 2**32), kind=st.sampled_from(sorted(KINDS)), where=st.integers(0, 99))
def test_moving_objects_changes_only_relation_texts(objs, seed, kind, where):
    a, b = _moved(facts(objs), where), _moved(facts(objs), where + 1000)
    recipe = TextRecipe(mix=(*TEXT_MIX.items(), (RELATION, 0.2)), slot="mixed")
    ta = make_text(a, NAMES, random.Random(seed), kind, recipe)
    tb = make_text(b, NAMES, random.Random(seed), kind, recipe)
    if kind != RELATION:
        assert ta == tb
    for t in (ta, tb):  # no text ever carries a coordinate; relations answer yes/no only
        if t.kind == RELATION:
            assert t.answer in (" yes", " no") and not re.search(r"\d", t.prompt)


def test_relation_answers_follow_the_centres():
    dog, cup = ObjectFact("dog", 28, 28, (30.0, 200.0)), ObjectFact("cup", 28, 28, (150.0, 20.0))
    seen = {}
    rng = random.Random(0)
    for _ in range(200):
        t = make_text([dog, cup], NAMES, rng, RELATION)
        seen[t.prompt.split("is the ", 1)[1].split("?")[0]] = t.answer
    assert seen == {"dog left of the cup": " yes", "cup left of the dog": " no",
                    "dog above the cup": " no", "cup above the dog": " yes"}
    twins = [ObjectFact("dog", 28, 28, (30.0, 30.0)), ObjectFact("dog", 28, 28, (190.0, 30.0))]
    assert make_text(twins, NAMES, random.Random(0), RELATION).kind == "exists"  # no unambiguous pair


def test_window_slot_spreads_the_size_corner_over_three_cells():
    obj = [ObjectFact("dog", 112, 28)]  # 4 x 1 cells: size corner (56, 0)
    corners = set(corner_draws(obj, "window", 300))
    assert corners == {(x, y) for x in (28, 56, 84) for y in (0, 28)}  # y = -1 cell is kept at 0
