"""In-context learning (paper Sec. 5.1): k context images with their boxes before the query,
drawn anew for each repeat, reported as mean and std over the repeats."""
from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from pin.boxes import BoxCodec  # noqa: E402
from pin.eval import metrics  # noqa: E402
from pin.eval.incontext import (  # noqa: E402
    context_text,
    draw_context,
    incontext_metrics,
    run_incontext,
)
from test_methods import _image, fresh_vlm  # noqa: E402

CODEC = BoxCodec(8)


def test_draws_are_seeded_distinct_and_change_per_repeat():
    pool = [_image(i) for i in range(12)]
    a = draw_context(pool, 5, seed=0, repeat=0)
    assert a == draw_context(pool, 5, seed=0, repeat=0)
    assert len({i for i, _ in a}) == 5
    assert a != draw_context(pool, 5, seed=0, repeat=1) and a != draw_context(pool, 5, seed=1, repeat=0)
    with pytest.raises(ValueError, match="13 context images"):
        draw_context(pool, 13, seed=0, repeat=0)


def test_context_prompt_holds_one_image_and_box_per_example():
    vlm = fresh_vlm()
    pool = [_image(i) for i in range(6)]
    drawn = draw_context(pool, 3, seed=0, repeat=0)
    text = context_text(vlm, CODEC, pool, drawn)
    assert text.count("<image>") == 3 and text.count("<|endofchunk|>") == 3
    for i, j in drawn:
        obj = pool[i].objects[j]
        assert vlm.prompt(obj.referral) + CODEC.encode(obj.grid_box) + vlm.answer_end in text


def test_run_incontext_answers_every_query_for_every_k_and_repeat():
    vlm = fresh_vlm()
    pool = [_image(i) for i in range(8)]
    feats = vlm.patch_features(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    rows, texts = [0, 1, 0], ["dog", "cup", "cup"]
    out = run_incontext(vlm, feats, rows, texts, pool, CODEC, shots=(1, 3), repeats=2, seed=0,
                        max_new_tokens=4, batch_size=2)
    assert sorted(out) == [1, 3] and all(len(draws) == 2 for draws in out.values())
    assert all(len(a) == 3 and all(isinstance(t, str) for t in a) for draws in out.values() for a in draws)
    again = run_incontext(vlm, feats, rows, texts, pool, CODEC, shots=(1, 3), repeats=2, seed=0,
                          max_new_tokens=4, batch_size=3)
    assert again == out  # deterministic, and the batch size changes nothing


def test_metrics_are_mean_and_std_over_repeats():
    gt = np.array([[0, 0, 112, 112], [112, 112, 224, 224]], dtype=float)
    tl, br = CODEC.encode((0, 0, 4, 4)), CODEC.encode((4, 4, 8, 8))  # " [0,0,112,112]", " [112,112,224,224]"
    draws = {2: [[tl, br],  # both right: IoU 1
                 [tl, tl]]}  # one right, one disjoint: mean IoU 0.5
    rows, first = incontext_metrics(draws, gt, [1, 2], lambda a: metrics.as_boxes([CODEC.parse(t) for t in a]))
    r = rows["incontext_2"]
    assert r["miou"] == pytest.approx(0.75) and r["miou_std"] == pytest.approx(0.25) and r["draws"] == 2
    assert first == {"incontext_2": draws[2][0]}
