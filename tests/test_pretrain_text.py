"""The mini VLM's pretraining texts must never tell it where anything is (issue: mini VLM)."""
import random
import re

from hypothesis import given, settings, strategies as st

from pin.vlm.pretrain_text import TEXT_MIX, ObjectFact, make_text

NAMES = ["dog", "cup", "kite", "teddy bear", "apple"]

objects_st = st.lists(
    st.tuples(st.sampled_from(NAMES), st.integers(1, 8), st.integers(1, 8)), min_size=1, max_size=3
)


def facts(objs, cell=28):
    return [ObjectFact(n, w * cell, h * cell) for n, w, h in objs]


@settings(max_examples=200, deadline=None)
@given(objs=objects_st, seed=st.integers(0, 2**32), kind=st.sampled_from(sorted(TEXT_MIX)),
       perm_seed=st.integers(0, 100))
def test_text_ignores_paste_order_and_position(objs, seed, kind, perm_seed):
    # ObjectFact holds no position at all; what remains to check is that the paste order (which
    # correlates with position in C: later objects are placed around earlier ones) leaks nothing.
    a = facts(objs)
    b = a[:]
    random.Random(perm_seed).shuffle(b)
    ta = make_text(a, NAMES, random.Random(seed), kind)
    tb = make_text(b, NAMES, random.Random(seed), kind)
    assert ta == tb


@settings(max_examples=200, deadline=None)
@given(objs=objects_st, seed=st.integers(0, 2**32))
def test_slot_numbers_are_sizes_only(objs, seed):
    f = facts(objs)
    t = make_text(f, NAMES, random.Random(seed), "slot")
    nums = [int(x) for x in re.findall(r"\d+", t.answer)]
    assert len(nums) == 4
    x1, y1, w, h = nums
    assert (x1, y1) == (0, 0)  # anchored at the origin whatever the object's place
    assert (w, h) in {(o.width, o.height) for o in f}


def test_every_kind_ends_with_end_token():
    f = facts([("dog", 2, 3), ("cup", 1, 1)])
    for kind in TEXT_MIX:
        t = make_text(f, NAMES, random.Random(0), kind)
        assert t.text.endswith("<|endofchunk|>") and t.prompt.startswith("<image>")
        assert "<|endofchunk|>" not in t.answer
