"""research/slot_styles.py: the slot styles that lost (docs/mini_vlm.md) live outside the product,
register themselves when imported, and write exactly the texts they wrote inside pin/."""
import ast
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import research.slot_styles  # noqa: F401  registers the research slot styles
from text_checks import assert_only_relations_move
from pin.params import ParamsError, parse_section
from pin.vlm.pretrain import _slot_size
from pin.vlm.pretrain_text import (KINDS, SLOT_STYLES, TEXT_MIX, ObjectFact, SlotStyle, TextRecipe,
                                   make_text, register_slot_style, slot_answer)

ROOT = Path(__file__).resolve().parents[1]
RESEARCH = ("origin", "anywhere", "size", "mixed", "attributes", "window")
NAMES = ["dog", "cup", "kite", "teddy bear", "apple"]

objects_st = st.lists(
    st.tuples(st.sampled_from(NAMES), st.integers(1, 8), st.integers(1, 8)), min_size=1, max_size=3
)


def facts(objs, cell=28):
    return [ObjectFact(n, w * cell, h * cell) for n, w, h in objs]


def slot_box(objs, seed, slot):
    """The facts for ``objs`` and the four numbers of one slot text about one of them."""
    f = facts(objs)
    t = make_text(f, NAMES, random.Random(seed), "slot", TextRecipe(slot=slot))
    return f, tuple(int(v) for v in re.findall(r"\d+", t.answer))


def corner_draws(obj, slot, n):
    """The (x1, y1) of ``n`` slot texts for ``obj`` drawn from one random stream."""
    rng = random.Random(0)
    return [tuple(int(v) for v in re.findall(r"\d+", make_text(obj, NAMES, rng, "slot",
                                                                 TextRecipe(slot=slot)).answer)[:2])
            for _ in range(n)]


def test_importing_registers_the_six_research_styles():
    assert sorted(SLOT_STYLES) == sorted((*RESEARCH, "appearance"))
    assert all(SLOT_STYLES[name].name == name for name in SLOT_STYLES)
    assert [s.name for s in SLOT_STYLES.values() if s.needs_rng] == ["anywhere", "mixed", "window"]
    assert [s.name for s in SLOT_STYLES.values() if not s.box] == ["attributes"]
    for name in RESEARCH:
        assert parse_section("pretrain", {"slot": name}).slot == name


def test_an_unknown_slot_is_refused_naming_the_key_and_the_registered_styles():
    with pytest.raises(ParamsError, match=r"pretrain\.slot: unknown slot style 'centre'; registered: anywhere, "
                                          r"appearance, attributes, mixed, origin, size, window \(.*research\.slot_styles"):
        parse_section("pretrain", {"slot": "centre"})


def test_the_product_alone_knows_only_appearance():
    code = ("import sys\n"
            "from pin.vlm import pretrain_text\n"
            "from pin.params import ParamsError, parse_section\n"
            "print(sorted(pretrain_text.SLOT_STYLES))\n"
            "print(sorted(m for m in sys.modules if m.startswith('research')))\n"
            "try:\n"
            "    parse_section('pretrain', {'slot': 'origin'})\n"
            "except ParamsError as err:\n"
            "    print(err)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    styles, research, error = out.stdout.splitlines()
    assert (styles, research) == ("['appearance']", "[]")
    assert error.startswith("pretrain.slot: unknown slot style 'origin'; registered: appearance (")
    assert "import research.slot_styles" in error


def test_a_duplicate_registration_is_refused():
    before = dict(SLOT_STYLES)
    for name in ("origin", "appearance"):
        with pytest.raises(ValueError, match=f"slot style '{name}' is already registered"):
            register_slot_style(SlotStyle(name, lambda obj, rng, recipe, count: " [0,0,0,0]"))
    assert SLOT_STYLES == before


def test_the_research_scripts_that_pretrain_import_the_styles():
    for script in ("scratch_recipes.py", "pretrain_language.py", "continue_pretrain.py", "frozen_lm_arm.py"):
        tree = ast.parse((ROOT / "research" / script).read_text())
        imported = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        assert "research.slot_styles" in imported, script


# Read from the if-chain in pin/vlm/pretrain_text.py before the styles moved: one random stream
# (seed 7) per style, each object answered twice in turn, count=2.
PINNED_OBJECTS = [ObjectFact("dog", 56, 84, levels=(3, 1)), ObjectFact("cup", 112, 28, levels=(0, 7)),
                  ObjectFact("kite", 90, 200, levels=(5, 0))]
PINNED = {
    "origin": [" [0,0,56,84]", " [0,0,56,84]", " [0,0,112,28]", " [0,0,112,28]", " [0,0,90,200]", " [0,0,90,200]"],
    "anywhere": [" [56,28,112,112]", " [84,140,140,224]", " [0,28,112,56]", " [112,28,224,56]", " [56,0,146,200]",
                 " [112,0,202,200]"],
    "size": [" [28,28,84,112]", " [28,28,84,112]", " [56,0,168,28]", " [56,0,168,28]", " [28,84,118,284]",
             " [28,84,118,284]"],
    "mixed": [" [28,28,84,112]", " [28,28,84,112]", " [0,28,112,56]", " [56,0,168,28]", " [28,84,118,284]",
              " [0,0,90,200]"],
    "attributes": [" [56,84,6,2]", " [56,84,6,2]", " [112,28,4,2]", " [112,28,4,2]", " [90,200,21,2]",
                   " [90,200,21,2]"],
    "window": [" [28,0,84,84]", " [28,56,84,140]", " [28,0,140,28]", " [84,0,196,28]", " [28,112,118,312]",
               " [0,112,90,312]"],
    "appearance": [" [84,28,140,112]", " [84,28,140,112]", " [0,196,112,224]", " [0,196,112,224]",
                   " [140,0,230,200]", " [140,0,230,200]"],
}


@pytest.mark.parametrize("slot", sorted(PINNED))
def test_each_style_writes_what_it_wrote_inside_the_product(slot):
    rng = random.Random(7)
    got = [slot_answer(o, rng, TextRecipe(slot=slot), count=2) for o in PINNED_OBJECTS for _ in range(2)]
    assert got == PINNED[slot]
    for answer, obj in zip(got, [o for o in PINNED_OBJECTS for _ in range(2)]):
        assert re.fullmatch(r" \[\d+,\d+,\d+,\d+\]", answer)  # four whole numbers in brackets
        n = [int(v) for v in re.findall(r"\d+", answer)]
        size = (n[2] - n[0], n[3] - n[1]) if SLOT_STYLES[slot].box else (n[0], n[1])
        assert size == (obj.width, obj.height)


@pytest.mark.parametrize("slot", ["anywhere", "mixed", "window"])
def test_styles_that_draw_need_a_random_stream(slot):
    with pytest.raises(ValueError, match=f"slot='{slot}' needs a random stream"):
        slot_answer(PINNED_OBJECTS[0], None, TextRecipe(slot=slot))


def test_slot_size_reads_the_attributes_style_as_numbers():
    assert _slot_size(" [56,56,4,1]", "attributes") == (56.0, 56.0)
    assert _slot_size(" yes", "attributes") is None
    assert _slot_size(" [56,56,4,1]", "mixed") is None  # a box style: x2 < x1 is not a box


@settings(max_examples=200, deadline=None)
@given(objs=objects_st, seed=st.integers(0, 2**32), kind=st.sampled_from(sorted(TEXT_MIX)),
       perm_seed=st.integers(0, 100))
@pytest.mark.parametrize("slot", RESEARCH)
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


@settings(max_examples=200, deadline=None)
@given(objs=objects_st, seed=st.integers(0, 2**32))
def test_anywhere_slot_is_a_size_at_a_random_corner(objs, seed):
    # The corner comes from the text's own random stream: a valid, grid-aligned box of the named
    # object's size, drawn from a distribution that does not depend on where the object is.
    f, (x1, y1, x2, y2) = slot_box(objs, seed, "anywhere")
    assert (x2 - x1, y2 - y1) in {(o.width, o.height) for o in f}
    assert 0 <= x1 < x2 <= 224 and 0 <= y1 < y2 <= 224
    assert x1 % 28 == 0 and y1 % 28 == 0


def test_anywhere_corners_cover_every_fitting_cell():
    obj = [ObjectFact("dog", 56, 196)]  # 2 x 7 cells: x1 in 0..6 cells, y1 in 0..1 cells
    corners = set(corner_draws(obj, "anywhere", 400))
    assert corners == {(28 * i, 28 * j) for i in range(7) for j in range(2)}


@settings(max_examples=200, deadline=None)
@given(objs=objects_st, seed=st.integers(0, 2**32))
def test_size_slot_corner_is_read_from_the_size(objs, seed):
    # The corner is a function of the named object's size: the LM must read the image to write
    # x1/y1, yet the text still says nothing about where the object is.
    f, (x1, y1, x2, y2) = slot_box(objs, seed, "size")
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


def test_window_slot_spreads_the_size_corner_over_three_cells():
    obj = [ObjectFact("dog", 112, 28)]  # 4 x 1 cells: size corner (56, 0)
    corners = set(corner_draws(obj, "window", 300))
    assert corners == {(x, y) for x in (28, 56, 84) for y in (0, 28)}  # y = -1 cell is kept at 0


@settings(max_examples=200, deadline=None)
@given(objs=objects_st, seed=st.integers(0, 2**32), kind=st.sampled_from(sorted(KINDS)), where=st.integers(0, 99))
def test_moving_objects_changes_only_relation_texts_with_the_mixed_slot(objs, seed, kind, where):
    assert_only_relations_move(facts(objs), NAMES, seed, kind, where, slot="mixed")
