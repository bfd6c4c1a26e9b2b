import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pycocotools import mask as cocomask

from pin.boxes import BoxCodec, box_area, iou, iou_matrix

GRIDS = [8, 14, 16]


@st.composite
def grid_boxes(draw, grid):
    x1 = draw(st.integers(0, grid - 1))
    x2 = draw(st.integers(x1 + 1, grid))
    y1 = draw(st.integers(0, grid - 1))
    y2 = draw(st.integers(y1 + 1, grid))
    return x1, y1, x2, y2


coord = st.floats(0, 224, allow_nan=False, allow_infinity=False)


@st.composite
def xyxy(draw):
    x1, x2 = sorted((draw(coord), draw(coord)))
    y1, y2 = sorted((draw(coord), draw(coord)))
    return x1, y1, x2, y2


def test_grid_lines_and_text():
    assert [BoxCodec(16).line(i) for i in range(3)] == [0, 14, 28]
    assert BoxCodec(14).line(1) == 16 and BoxCodec(8).line(1) == 28
    assert BoxCodec(16).encode((1, 2, 8, 7)) == " [14,28,112,98]"
    assert BoxCodec(3).encode((0, 1, 2, 3)) == " [0,74.67,149.33,224]"
    assert BoxCodec(32).line_text(1) == "7" and BoxCodec(64).line_text(1) == "3.5"
    assert BoxCodec(16).to_frame((0, 0, 16, 16)) == (0, 0, 224, 224)


def test_max_answer_chars():
    for grid in (3, 8, 14, 16):
        codec = BoxCodec(grid)
        longest = max(
            len(codec.encode((x1, y1, x2, y2)))
            for x1 in range(grid) for x2 in range(x1 + 1, grid + 1)
            for y1, y2 in [(x1, x2)]
        )
        assert codec.max_answer_chars >= longest
    assert BoxCodec(16).max_answer_chars == len(" [224,224,224,224]")


@pytest.mark.parametrize("bad", [(0, 0, 0, 1), (2, 0, 1, 1), (0, 0, 17, 1), (-1, 0, 1, 1), (0.5, 0, 1, 1)])
def test_encode_rejects_invalid_grid_boxes(bad):
    with pytest.raises(ValueError):
        BoxCodec(16).encode(bad)


def test_snap():
    codec = BoxCodec(16)
    # a 448x448 image: pixel 28 -> frame 14 = line 1
    assert codec.snap((28, 56, 224, 200), (448, 448)) == (1, 2, 8, 7)
    # non-square image: per-axis scaling
    assert codec.snap((0, 0, 100, 50), (100, 50)) == (0, 0, 16, 16)
    # thinner than a cell: the cell holding the centre
    assert codec.snap((30, 30, 31, 31), (224, 224)) == (2, 2, 3, 3)
    assert codec.to_grid((15, 15, 27, 27), mode="cover") == (1, 1, 2, 2)
    assert codec.to_grid((13, 13, 29, 29), mode="cover") == (0, 0, 3, 3)
    assert codec.to_grid((13, 13, 29, 29), mode="round") == (1, 1, 2, 2)
    with pytest.raises(ValueError):
        codec.to_grid((10, 10, 5, 20))


@pytest.mark.parametrize(
    "text, want",
    [
        (" [14,28,112,98]", (14, 28, 112, 98)),
        ("[14,28,112,98]", (14, 28, 112, 98)),
        ("\n [0, 0, 224, 224] and more", (0, 0, 224, 224)),
        (" [74.67,0,149.33,224]</s>", (74.67, 0, 149.33, 224)),
        (" [14,28,112,98] [0,0,14,14]", (14, 28, 112, 98)),
        ("", None),
        ("a [14,28,112,98]", None),  # not at the start
        (" [14,28,112]", None),
        (" [14,28,112,98", None),
        (" [-14,28,112,98]", None),
        (" [14,28,225,98]", None),  # outside the frame
        (" [112,28,14,98]", None),  # x1 > x2
        (" [14,28,14,98]", None),  # empty
        (" [1e2,28,112,98]", None),
        (" [nan,28,112,98]", None),
        (" [14,28,112," + "9" * 400 + "]", None),
        (" [١٤,28,112,98]", None),  # non-ASCII digits
    ],
)
def test_parse_examples(text, want):
    assert BoxCodec(16).parse(text) == want


def test_parse_non_string():
    assert BoxCodec(16).parse(None) is None
    assert BoxCodec(16).parse(b" [0,0,14,14]") is None


@pytest.mark.parametrize("grid", GRIDS + [3])
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_encode_parse_round_trip(grid, data):
    codec = BoxCodec(grid)
    gb = data.draw(grid_boxes(grid))
    text = codec.encode(gb)
    assert text.startswith(" [") and " " not in text[1:]
    assert len(text) <= codec.max_answer_chars
    box = codec.parse(text)
    assert box is not None
    assert np.allclose(box, codec.to_frame(gb), atol=0.005)
    assert codec.parse_grid(text) == gb
    assert codec.to_grid(codec.to_frame(gb)) == gb
    assert codec.to_grid(codec.to_frame(gb), mode="cover") == gb


@settings(max_examples=500, deadline=None)
@given(text=st.text())
def test_parse_never_raises(text):
    for grid in GRIDS:
        box = BoxCodec(grid).parse(text)
        if box is not None:
            x1, y1, x2, y2 = box
            assert 0 <= x1 < x2 <= 224 and 0 <= y1 < y2 <= 224


@settings(max_examples=200, deadline=None)
@given(prefix=st.sampled_from(["", " ", "\t"]), nums=st.lists(st.integers(0, 300), min_size=4, max_size=4),
       tail=st.text(max_size=5))
def test_parse_valid_iff_valid_numbers(prefix, nums, tail):
    text = prefix + "[" + ",".join(map(str, nums)) + "]" + tail
    x1, y1, x2, y2 = nums
    valid = max(nums) <= 224 and x1 < x2 and y1 < y2
    assert (BoxCodec(16).parse(text) is not None) == valid


TINY = 1.9649045568186328e-175  # w * h underflows to 0.0


@settings(max_examples=300, deadline=None)
@given(a=xyxy(), b=xyxy())
@example(a=(0.0, 0.0, TINY, TINY), b=(0.0, 0.0, TINY, TINY))
def test_iou_properties_and_pycocotools(a, b):
    v = float(iou(a, b))
    assert 0.0 <= v <= 1.0
    assert v == pytest.approx(float(iou(b, a)), abs=1e-12)
    xywh = lambda t: [[t[0], t[1], t[2] - t[0], t[3] - t[1]]]  # noqa: E731
    ref = float(cocomask.iou(xywh(a), xywh(b), [0])[0][0])
    if np.isnan(ref):  # pycocotools divides 0 by 0 when both areas underflow; ours calls that no overlap
        assert box_area(a) == 0 and box_area(b) == 0 and v == 0.0
    else:
        assert v == pytest.approx(ref, abs=1e-9)
    if box_area(a) > 0:
        assert float(iou(a, a)) == pytest.approx(1.0)


def test_iou_vectorised_matches_pycocotools():
    rng = np.random.default_rng(0)
    p = np.sort(rng.uniform(0, 224, (2, 50, 2)), axis=-1)
    a = np.stack([p[0, :, 0], p[1, :, 0], p[0, :, 1], p[1, :, 1]], -1)
    q = np.sort(rng.uniform(0, 224, (2, 40, 2)), axis=-1)
    b = np.stack([q[0, :, 0], q[1, :, 0], q[0, :, 1], q[1, :, 1]], -1)
    to_xywh = lambda x: np.concatenate([x[:, :2], x[:, 2:] - x[:, :2]], 1)  # noqa: E731
    ref = cocomask.iou(to_xywh(a).tolist(), to_xywh(b).tolist(), [0] * len(b))
    assert np.allclose(iou_matrix(a, b), ref, atol=1e-12)
    assert np.allclose(iou(a[:40], b), np.diag(ref[:40]), atol=1e-12)
    assert iou(a, a).shape == (50,) and np.allclose(iou(a, a), 1.0)


def test_iou_edge_cases():
    assert float(iou((0, 0, 10, 10), (10, 0, 20, 10))) == 0.0  # touching
    assert float(iou((0, 0, 0, 0), (0, 0, 0, 0))) == 0.0  # both empty
    assert float(iou((0, 0, 10, 10), (0, 0, 5, 10))) == pytest.approx(0.5)


def test_area():
    # an inverted box has no area (the size buckets of evaluation live in pin.eval.metrics)
    assert box_area([[0, 0, 10, 20], [5, 5, 1, 1]]).tolist() == [200, 0]
