"""Issue 19's appearance-read corners: per-object levels drawn independently of position, an
appearance that stays recognisable, and the slot answer that reads its corner from the levels."""
import random
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from pin.params import ComposeParams
from pin.synth.appearance import apply_appearance, appearance_levels
from pin.synth.compose import image_seed
from pin.synth.layout import layout, sample_count
from pin.vlm.pretrain_text import ObjectFact, TextRecipe, make_text, slot_answer

boxes_st = st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7), st.integers(1, 8), st.integers(1, 8)),
                    min_size=1, max_size=3).map(
    lambda bs: [(i, j, min(i + w, 8), min(j + h, 8)) for i, j, w, h in bs])


@settings(max_examples=200, deadline=None)
@given(boxes=boxes_st, seed=st.integers(0, 2**62), shift=st.integers(-7, 7))
def test_levels_ignore_the_place_and_fit_the_frame(boxes, seed, shift):
    p = ComposeParams(appearance="all", grid=8)
    levels = appearance_levels(seed, boxes, p, "train")
    for (i1, j1, i2, j2), (a, s) in zip(boxes, levels):
        assert 0 <= a <= 8 - (i2 - i1) and 0 <= s <= 8 - (j2 - j1)  # the slot box fits the frame
    moved = []
    for i1, j1, i2, j2 in boxes:  # the same sizes elsewhere on the grid
        di = max(-i1, min(shift, 8 - i2))
        dj = max(-j1, min(-shift, 8 - j2))
        moved.append((i1 + di, j1 + dj, i2 + di, j2 + dj))
    assert appearance_levels(seed, moved, p, "train") == levels


def test_modes_decide_which_splits_carry_the_jitter():
    boxes = [(0, 0, 2, 3), (4, 4, 5, 5)]
    seed = next(s for s in range(100) if appearance_levels(s, boxes, ComposeParams(appearance="all"), "train")
                != [(0, 0), (0, 0)])
    assert appearance_levels(seed, boxes, ComposeParams(appearance="none"), "pretrain") == [(), ()]
    pre = ComposeParams(appearance="pretrain")
    assert appearance_levels(seed, boxes, pre, "train") == [(0, 0), (0, 0)]  # PIN's data as drawn (V1)
    jittered = appearance_levels(seed, boxes, pre, "pretrain")
    assert jittered != [(0, 0), (0, 0)]
    assert appearance_levels(seed, boxes, ComposeParams(appearance="all"), "heldout") == jittered  # V2


def test_level_and_centre_are_uncorrelated_within_each_size():
    # The honesty constraint: on the pretraining split a level says nothing about where the
    # object is. Simulated with the real layout and level draws over 3,000 pretraining images.
    p = ComposeParams(appearance="pretrain", grid=8)
    rows = []
    for index in range(3000):
        seed = image_seed(p.seed, "pretrain", index)
        rng = np.random.default_rng(seed)
        aspects = [float(a) for a in np.exp(rng.uniform(-0.7, 0.7, size=sample_count(rng, p)))]
        boxes = layout(rng, aspects, p)
        for (i1, j1, i2, j2), (a, s) in zip(boxes, appearance_levels(seed, boxes, p, "pretrain")):
            rows.append((i2 - i1, j2 - j1, (i1 + i2) / 2, (j1 + j2) / 2, a, s))
    r = np.array(rows, float)
    for level, centre in ((4, 2), (5, 3)):  # a with the centre's x, s with its y
        x, y = r[:, level].copy(), r[:, centre].copy()
        for size in {tuple(v) for v in r[:, :2]}:  # remove each size's mean: correlation within sizes
            m = (r[:, 0] == size[0]) & (r[:, 1] == size[1])
            x[m] -= x[m].mean()
            y[m] -= y[m].mean()
        corr = float(np.corrcoef(x, y)[0, 1])
        assert abs(corr) < 0.05, (level, corr)


def test_appearance_darkens_and_greys_but_keeps_shape_and_level_zero():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[2:6, 2:6] = (220, 40, 40, 255)
    im = Image.fromarray(rgba, "RGBA")
    assert apply_appearance(im, 0, 0, grid=8) is im
    def stats(a, s):
        arr = np.asarray(apply_appearance(im, a, s, grid=8)).astype(float)
        rgb = arr[3, 3, :3]
        return rgb.mean(), rgb.max() - rgb.min(), arr[..., 3]
    base_b, base_c, alpha = stats(0, 0)
    dark_b, dark_c, dark_alpha = stats(7, 0)
    pale_b, pale_c, _ = stats(0, 7)
    assert (dark_alpha == alpha).all()  # the silhouette is untouched
    assert dark_b < 0.5 * base_b and pale_c < 0.4 * base_c
    assert pale_c > 0.3 * base_c  # still coloured: recognisable
    means = [stats(a, 0)[0] for a in range(8)]
    assert all(x > y for x, y in zip(means, means[1:]))  # monotone: levels are ordered


@settings(max_examples=100, deadline=None)
@given(w=st.integers(1, 8), h=st.integers(1, 8), a=st.integers(0, 7), s=st.integers(0, 7))
def test_appearance_slot_reads_the_corner_from_the_levels(w, h, a, s):
    a, s = min(a, 8 - w), min(s, 8 - h)
    obj = ObjectFact("dog", 28 * w, 28 * h, levels=(a, s))
    nums = [int(v) for v in re.findall(r"\d+", slot_answer(obj, random.Random(0), TextRecipe(slot="appearance")))]
    assert nums == [28 * a, 28 * s, 28 * a + 28 * w, 28 * s + 28 * h]
    assert nums[2] <= 224 and nums[3] <= 224


def test_appearance_slot_needs_levels():
    with pytest.raises(ValueError, match="compose.appearance"):
        make_text([ObjectFact("dog", 56, 56)], ["dog"], random.Random(0), "slot", TextRecipe(slot="appearance"))


def test_vision_objective_groups_keep_categories_apart_from_levels():
    import torch

    from pin.vlm.pretrain_vision import _soft_target_loss, pretrain_vision

    y = torch.tensor([[1.0, 1.0, 0.0, 1.0, 0.0]])
    logits = torch.zeros(1, 5)
    # grouped: each group's target sums to one on its own, so levels cannot dilute categories
    grouped = _soft_target_loss(logits[:, :3], y[:, :3]) + _soft_target_loss(logits[:, 3:], y[:, 3:])
    assert float(grouped) == pytest.approx(np.log(3) + np.log(2))
    with pytest.raises(ValueError, match="do not add up"):
        pretrain_vision(None, torch.zeros(1, 3, 8, 8, dtype=torch.uint8), y, steps=0, lr=0.1, batch_size=1,
                        seed=0, groups=(3, 3))


def test_level_map_is_not_reported_on_a_probe_at_one_level():
    import torch

    from pin.vlm.pretrain_vision import pretrain_vision

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3, 4)

        def forward(self, x):  # (B, 3, S, S) -> (pooled, tokens (B, S*S, 4))
            tokens = self.proj(x.flatten(2).transpose(1, 2))
            return tokens.mean(1), tokens

    class Flamingo:
        vision_encoder = Tower()

    u8 = torch.randint(0, 255, (6, 3, 4, 4), dtype=torch.uint8)
    cats = torch.tensor([[1.0, 0.0], [0.0, 1.0]] * 3)
    at_zero = torch.zeros(6, 4)
    at_zero[:, 0] = at_zero[:, 2] = 1  # every object at level (0, 0): V1's held-out split
    spread = at_zero.clone()
    spread[::2, 0], spread[::2, 1] = 0, 1
    for levels, reported in ((at_zero, False), (spread, True)):
        labels = torch.cat([cats, levels], 1)
        res = pretrain_vision(Flamingo(), u8, labels, steps=1, lr=1e-3, batch_size=2, seed=0,
                              eval_u8=u8, eval_labels=labels, groups=(2, 2, 2))
        assert np.isnan(res.level_map) != reported
