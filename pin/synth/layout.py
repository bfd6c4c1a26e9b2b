"""The paper's composition function C (Sec. 4.2, Sec. 5, Appendix D): pure layout and pasting.

C(I_b, r, a_max, s_min, s_max, o_max) pastes objects on a background image I_b:

* number of objects ``a`` ~ uniform{1..a_max};
* size: the object's LONGER side, as a fraction of the image side, is drawn uniformly from
  ``[s_min[a-1], s_max[a-1]]`` (the bounds for the final object count ``a``) and snapped to a
  whole number of grid cells inside those bounds (:meth:`ComposeParams.long_side_cells`; the
  params refuse bounds that hold no whole cell);
* aspect ratio ``r`` = the object's original one; the shorter side is the nearest whole number
  of cells (at least one), so the ratio is kept up to half a cell of quantisation;
* position: the top-left corner is a uniform grid line, the box lies inside the image;
* grid: G = ``compose.grid`` cells of ``image_size / G`` px; every box coordinate is a grid line,
  and the object is resized to exactly its snapped rectangle and alpha-blended in paste order;
* overlap (``o_max``), the measure used here ("occlusion"): for every already inserted object,
  the fraction of ITS box covered by the union of the boxes pasted after it (which lie on top of
  it) must stay <= o_max. The union makes the bound hold for the object's total occlusion, not
  just pairwise (two later boxes each covering 50% cannot hide an object completely). The newly
  pasted object lies on top and stays fully visible, so its own covered fraction is not bounded
  (a small object may sit inside a large one's box, like a cup on a table). o_max = 0 means no
  two boxes intersect (paper Tab. 6, row c). See ``occlusion``;
* a placement that breaks the overlap bound is redrawn (``MAX_TRIES`` per object, ``RESTARTS``
  full restarts); then ``a`` is reduced by one and the layout redrawn with the size bounds of the
  smaller count (a = 1 always fits).

Referrals (Appendix D, ``compose.referrals``): an object whose category occurs several times in
the image gets a positional word from the axis with the largest centre difference, phrased
"left dog" or "dog on the left" (drawn 50/50), and "middle dog" / "dog in the middle" when it lies
between its peers (``compose.referral_style: appendix_d``; ``prefix``: the prefix form only and
a bare name in the middle; see :func:`referrals`). Everything random is drawn from the ``numpy.random.Generator`` passed in.
"""
from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image

from pin.categories import query_name

if TYPE_CHECKING:
    from pin.params import ComposeParams

MAX_TRIES = 50  # placement draws per object before a full restart
RESTARTS = 3  # full layout restarts before a is reduced
EPS = 1e-9

Box = tuple[int, int, int, int]  # grid cells (i1, j1, i2, j2), i along x, ends exclusive


def snap_size(aspect: float, long_cells: int) -> tuple[int, int]:
    """(width, height) in cells for an object of aspect ratio w/h with the given longer side."""
    if aspect >= 1:
        return long_cells, max(1, math.floor(long_cells / aspect + 0.5))
    return max(1, math.floor(long_cells * aspect + 0.5)), long_cells


def covered_fraction(box: Box, others: Sequence[Box]) -> float:
    """Fraction of ``box`` covered by the union of ``others`` (exact on the grid)."""
    i1, j1, i2, j2 = box
    mask = np.zeros((j2 - j1, i2 - i1), dtype=bool)
    for o1, p1, o2, p2 in others:
        a, b, c, d = max(i1, o1), max(j1, p1), min(i2, o2), min(j2, p2)
        if a < c and b < d:
            mask[b - j1:d - j1, a - i1:c - i1] = True
    return float(mask.mean())


def occlusion(boxes: Sequence[Box]) -> list[float]:
    """The overlap measure bounded by o_max: for each box (in paste order), the fraction of it
    covered by the union of the boxes pasted after it."""
    return [covered_fraction(b, boxes[k + 1:]) for k, b in enumerate(boxes)]


def visible_extent(boxes: Sequence[Box]) -> list[Box]:
    """Each box (in paste order) cut to what the boxes pasted after it leave visible: the bounding
    box, in grid cells, of its cells outside their union (``compose.box: visible``; COCO, VOC and
    LVIS label the visible extent). Measured on the boxes, not the objects' alpha; o_max < 1
    always leaves a part, and a box covered completely keeps its pasted extent."""
    out = []
    for k, (i1, j1, i2, j2) in enumerate(boxes):
        free = np.ones((j2 - j1, i2 - i1), dtype=bool)
        for o1, p1, o2, p2 in boxes[k + 1:]:
            a, b, c, d = max(i1, o1), max(j1, p1), min(i2, o2), min(j2, p2)
            if a < c and b < d:
                free[b - j1:d - j1, a - i1:c - i1] = False
        ys, xs = np.nonzero(free)
        out.append((i1 + int(xs.min()), j1 + int(ys.min()), i1 + int(xs.max()) + 1, j1 + int(ys.max()) + 1)
                   if len(xs) else (i1, j1, i2, j2))
    return out


def _fits(boxes: list[Box], new: Box, o_max: float) -> bool:
    later = [*boxes, new]
    return all(covered_fraction(b, later[k + 1:]) <= o_max + EPS for k, b in enumerate(boxes))


def sample_count(rng: np.random.Generator, p: ComposeParams) -> int:
    return int(rng.integers(1, p.a_max + 1))


def layout(rng: np.random.Generator, aspects: Sequence[float], p: ComposeParams) -> list[Box]:
    """Place objects with the given aspect ratios (w/h), in order, on the grid.

    Returns boxes for the first ``len(result)`` objects (a is reduced when they do not fit).
    """
    G = p.grid
    for a in range(min(len(aspects), p.a_max), 0, -1):
        lo, hi = p.long_side_cells(a)
        s_lo, s_hi = p.s_min[a - 1], p.s_max[a - 1]
        for _ in range(RESTARTS):
            boxes: list[Box] = []
            for k in range(a):
                for _ in range(MAX_TRIES):
                    s = rng.uniform(s_lo, s_hi)
                    long_cells = min(hi, max(lo, math.floor(s * G + 0.5)))
                    w, h = snap_size(aspects[k], long_cells)
                    i1 = int(rng.integers(0, G - w + 1))
                    j1 = int(rng.integers(0, G - h + 1))
                    box = (i1, j1, i1 + w, j1 + h)
                    if _fits(boxes, box, p.o_max):
                        boxes.append(box)
                        break
                else:
                    break  # this object did not fit: restart the layout
            if len(boxes) == a:
                return boxes
    return []


def to_pixels(box: Box, p: ComposeParams) -> tuple[int, int, int, int]:
    c = p.image_size // p.grid
    return box[0] * c, box[1] * c, box[2] * c, box[3] * c


def paste(canvas: Image.Image, obj: Image.Image, px_box: tuple[int, int, int, int]) -> None:
    """Resize an RGBA object to exactly ``px_box`` and alpha-blend it into the RGB ``canvas`` in
    place, on that rectangle only: out = (fg * a + bg * (255 - a)) / 255, rounded (PIL's C blend;
    identical to the uint16 numpy formula, 4x faster)."""
    x1, y1, x2, y2 = px_box
    fg = obj.resize((x2 - x1, y2 - y1), Image.BILINEAR, reducing_gap=3.0)
    canvas.paste(fg, (x1, y1), fg)


def render(background: np.ndarray, objects: Sequence[Image.Image], boxes: Sequence[Box],
           p: ComposeParams) -> Image.Image:
    """Paste the objects, in order, on a copy of the background (H x W x 3 uint8)."""
    canvas = Image.fromarray(np.ascontiguousarray(background, dtype=np.uint8), "RGB")
    for obj, box in zip(objects, boxes):
        paste(canvas, obj, to_pixels(box, p))
    return canvas


def encode(canvas: Image.Image, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpeg":
        canvas.save(buf, "JPEG", quality=quality)
    else:
        canvas.save(buf, "PNG", compress_level=3)
    return buf.getvalue()


def phrase(word: str, name: str, suffix: bool) -> str:
    """"left dog" or "dog on the left" ("middle dog" / "dog in the middle")."""
    if not suffix:
        return f"{word} {name}"
    return f"{name} in the middle" if word == "middle" else f"{name} on the {word}"


def referrals(categories: Sequence[str], boxes: Sequence[Sequence[int]], clean: bool | None = None,
              style: str = "prefix", rng: np.random.Generator | None = None) -> list[str]:
    """Referral text per object: the query name, with left/right/top/bottom when the category
    occurs several times. For object k among its same-category peers, the margin of a direction
    is how far k's centre lies beyond ALL peers' centres on that axis (e.g. "left": min over
    peers of peer_cx - k_cx); the direction with the largest positive margin wins. With two
    instances this is exactly the axis with the largest centre difference.

    ``style="prefix"``: "left dog"; an object extreme in no direction (the middle of three on
    both axes, or equal centres) keeps the bare name. ``style="appendix_d"`` (the paper's App. D):
    "left dog" or "dog on the left", drawn 50/50 from ``rng``, and "middle" for an object with
    peers on both sides of it on some axis (equal centres still keep the bare name)."""
    cx = [(b[0] + b[2]) / 2 for b in boxes]
    cy = [(b[1] + b[3]) / 2 for b in boxes]
    out = []
    for k, cat in enumerate(categories):
        name = query_name(cat, clean)
        peers = [m for m, c in enumerate(categories) if c == cat and m != k]
        if not peers:
            out.append(name)
            continue
        margins = {
            "left": min(cx[m] - cx[k] for m in peers),
            "right": min(cx[k] - cx[m] for m in peers),
            "top": min(cy[m] - cy[k] for m in peers),
            "bottom": min(cy[k] - cy[m] for m in peers),
        }
        word, margin = max(margins.items(), key=lambda kv: kv[1])  # ties: first in that order
        if margin <= 0:
            if style != "appendix_d" or not _between(k, peers, cx, cy):
                out.append(name)
                continue
            word = "middle"
        suffix = style == "appendix_d" and rng is not None and rng.random() < 0.5
        out.append(phrase(word, name, suffix))
    return out


def _between(k: int, peers: Sequence[int], cx: Sequence[float], cy: Sequence[float]) -> bool:
    """Some peer lies before and some after object k on one axis."""
    return any(min(c[m] for m in peers) < c[k] < max(c[m] for m in peers) for c in (cx, cy))


__all__ = [
    "Box", "layout", "sample_count", "snap_size", "covered_fraction", "occlusion", "render", "paste",
    "to_pixels", "encode", "referrals", "phrase", "visible_extent",
]
