"""The mini VLM's pretraining texts must never tell it where anything is (issue: mini VLM).

The product's one slot style, ``appearance``; the research styles are tested in
tests/test_research_slot_styles.py."""
import random
import re

from hypothesis import given, settings, strategies as st

import pytest

from pin.vlm.pretrain_text import KINDS, RELATION, TEXT_MIX, ObjectFact, TextRecipe, make_text
from text_checks import assert_only_relations_move

NAMES = ["dog", "cup", "kite", "teddy bear", "apple"]

objects_st = st.lists(
    st.tuples(st.sampled_from(NAMES), st.integers(1, 8), st.integers(1, 8), st.integers(0, 80)), min_size=1, max_size=3
)


def facts(objs, cell=28):
    """Objects of w x h cells with appearance levels that keep the slot box in the 8 x 8 frame."""
    return [ObjectFact(n, w * cell, h * cell, levels=(lv % (9 - w), lv // 9 % (9 - h))) for n, w, h, lv in objs]


@settings(max_examples=200, deadline=None)
@given(objs=objects_st, seed=st.integers(0, 2**32), kind=st.sampled_from(sorted(TEXT_MIX)),
       perm_seed=st.integers(0, 100))
def test_text_ignores_paste_order_and_position(objs, seed, kind, perm_seed):
    # ObjectFact holds no position at all; what remains to check is that the paste order (which
    # correlates with position in C: later objects are placed around earlier ones) leaks nothing.
    a = facts(objs)
    b = a[:]
    random.Random(perm_seed).shuffle(b)
    recipe = TextRecipe(slot="appearance")
    ta = make_text(a, NAMES, random.Random(seed), kind, recipe)
    tb = make_text(b, NAMES, random.Random(seed), kind, recipe)
    assert ta == tb


def test_every_kind_ends_with_end_token():
    f = [ObjectFact("dog", 56, 84, levels=(1, 4)), ObjectFact("cup", 28, 28, levels=(0, 7))]
    for kind in TEXT_MIX:
        t = make_text(f, NAMES, random.Random(0), kind)  # the default recipe: the appearance slot
        assert t.text.endswith("<|endofchunk|>") and t.prompt.startswith("<image>")
        assert "<|endofchunk|>" not in t.answer


UNKNOWN_CENTER = r"unknown slot style 'center'; registered: .*appearance.*research\.slot_styles"


def test_recipe_rejects_unknown_kinds_and_slots():
    with pytest.raises(ValueError, match="unknown text kinds"):
        TextRecipe(mix=(("gossip", 1.0),))
    with pytest.raises(ValueError, match=UNKNOWN_CENTER):
        TextRecipe(slot="center")


@settings(max_examples=200, deadline=None)
@given(objs=objects_st, seed=st.integers(0, 2**32), kind=st.sampled_from(sorted(KINDS)), where=st.integers(0, 99))
def test_moving_objects_changes_only_relation_texts(objs, seed, kind, where):
    assert_only_relations_move(facts(objs), NAMES, seed, kind, where, slot="appearance")


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
