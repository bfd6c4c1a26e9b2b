"""Box geometry and the grid codec shared by training and evaluation.

The VLM reads and writes boxes as text on a G x G grid over a square ``frame`` (224 px, the
encoder's input): a grid line ``i`` sits at ``frame * i / G`` (multiples of 14 for G=16, of 16 for
G=14, of 28 for G=8), and a grid box ``(gx1, gy1, gx2, gy2)`` holds grid-line indices with
``gx2, gy2`` exclusive, so ``0 <= gx1 < gx2 <= G``. The answer text is the authors' format
``" [x1,y1,x2,y2]"`` (paper Sec. 4.1 / App. D): a leading space, no spaces inside, integral values as
ints and a non-integral grid line with at most two decimals.

Pixel boxes are ``xyxy`` floats. ``snap``/``to_frame_box`` assume the image is squashed to
``frame x frame`` (BLIP-2's processor does this); a preprocessing that crops or pads must map
the box into the frame itself first.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pin.frame import FRAME

GridBox = tuple[int, int, int, int]
Box = tuple[float, float, float, float]

# One bracketed box of four unsigned decimals at the very start of the answer (after optional
# whitespace). Whitespace around the numbers is tolerated; anything else (signs, exponents, a
# box later in the text, a missing bracket) is unparsable. re.ASCII: only 0-9 count as digits.
_NUM = r"(\d+(?:\.\d+)?)"
_BOX_RE = re.compile(
    r"\s*\[\s*" + r"\s*,\s*".join([_NUM] * 4) + r"\s*\]",
    re.ASCII,
)


def _format_number(num: int, den: int) -> str:
    """num/den as text: an int when integral, else at most two decimals, trailing zeros stripped."""
    if num % den == 0:
        return str(num // den)
    return f"{num / den:.2f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class BoxCodec:
    """Grid <-> frame <-> text for one grid size. ``grid`` cells per side of a ``frame``-px square."""

    grid: int
    frame: int = FRAME

    def __post_init__(self):
        if not isinstance(self.grid, int) or self.grid < 1:
            raise ValueError(f"grid must be a positive int, got {self.grid!r}")
        if not isinstance(self.frame, int) or self.frame < 1:
            raise ValueError(f"frame must be a positive int, got {self.frame!r}")

    # ---- grid lines -------------------------------------------------------------------------
    @property
    def cell(self) -> float:
        return self.frame / self.grid

    def line(self, i: int) -> float:
        """Frame coordinate of grid line ``i`` (0..grid)."""
        return self.frame * i / self.grid

    def line_text(self, i: int) -> str:
        return _format_number(self.frame * i, self.grid)

    @property
    def max_answer_chars(self) -> int:
        """Length of the longest answer text this codec can produce (without the end token).

        Any char-, byte- or BPE-tokenizer splits this ASCII text into at most this many tokens, so
        ``max_answer_chars + 1`` (the end token) bounds ``max_new_tokens`` for decoding."""
        longest = max(len(self.line_text(i)) for i in range(self.grid + 1))
        return len(" [,,,]") + 4 * longest

    # ---- geometry ---------------------------------------------------------------------------
    def check(self, grid_box: GridBox) -> GridBox:
        """Validate a grid box (ints, 0 <= x1 < x2 <= grid, same for y) and return it as a tuple."""
        try:
            gx1, gy1, gx2, gy2 = (int(v) for v in grid_box)
        except (TypeError, ValueError):
            raise ValueError(f"grid box must be four ints, got {grid_box!r}") from None
        if any(int(v) != v for v in grid_box):
            raise ValueError(f"grid box must hold integral values, got {grid_box!r}")
        if not (0 <= gx1 < gx2 <= self.grid and 0 <= gy1 < gy2 <= self.grid):
            raise ValueError(f"grid box {grid_box!r} outside 0 <= x1 < x2 <= {self.grid} (same for y)")
        return gx1, gy1, gx2, gy2

    def to_frame(self, grid_box: GridBox) -> Box:
        """Grid-line indices -> frame coordinates (xyxy, x2/y2 exclusive lines)."""
        return tuple(self.line(i) for i in self.check(grid_box))  # type: ignore[return-value]

    def to_grid(self, frame_box, mode: Literal["round", "cover"] = "round") -> GridBox:
        """Snap a frame-coordinate box to grid lines.

        ``round``: each side to its nearest grid line (best IoU with the original box).
        ``cover``: the smallest grid box containing the box. Either way the result has at least
        one cell per axis (a box thinner than a cell becomes the cell holding its centre)."""
        x1, y1, x2, y2 = (float(v) for v in frame_box)
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 < x1 or y2 < y1:
            raise ValueError(f"not a valid xyxy box: {frame_box!r}")
        (gx1, gx2), (gy1, gy2) = self._snap_axis(x1, x2, mode), self._snap_axis(y1, y2, mode)
        return gx1, gy1, gx2, gy2

    def _snap_axis(self, lo: float, hi: float, mode: str) -> tuple[int, int]:
        g = self.grid
        a, b = lo * g / self.frame, hi * g / self.frame
        if mode == "round":
            i, j = math.floor(a + 0.5), math.floor(b + 0.5)
        elif mode == "cover":
            # a tiny tolerance so a side lying on a grid line (up to float error) stays on it
            i, j = math.floor(a + 1e-9), math.ceil(b - 1e-9)
        else:
            raise ValueError(f"mode must be 'round' or 'cover', got {mode!r}")
        i, j = min(max(i, 0), g), min(max(j, 0), g)
        if j <= i:  # thinner than a cell: the cell holding the centre
            c = min(max(math.floor((a + b) / 2), 0), g - 1)
            i, j = c, c + 1
        return i, j

    def to_frame_box(self, box, size: tuple[int, int]) -> Box:
        """Pixel box in an image of ``size = (W, H)`` -> frame coordinates (image squashed)."""
        return scale_box(box, size, (self.frame, self.frame))

    def snap(self, box, size: tuple[int, int], mode: Literal["round", "cover"] = "round") -> GridBox:
        """Pixel box in an image of ``size = (W, H)`` -> grid box."""
        return self.to_grid(self.to_frame_box(box, size), mode)

    # ---- text -------------------------------------------------------------------------------
    def encode(self, grid_box: GridBox) -> str:
        """Grid box -> the answer text, e.g. ``" [14,28,112,98]"`` for grid 16."""
        return " [" + ",".join(self.line_text(i) for i in self.check(grid_box)) + "]"

    def parse(self, text) -> Box | None:
        """Answer text -> frame-coordinate box, or None when unparsable.

        Accepts only a bracketed box of four numbers at the start of ``text`` (leading whitespace
        allowed, anything after the ``]`` ignored), each number in [0, frame] with x1 < x2 and
        y1 < y2. Never guesses a box and never raises."""
        if not isinstance(text, str):
            return None
        m = _BOX_RE.match(text)
        if m is None:
            return None
        x1, y1, x2, y2 = (float(v) for v in m.groups())  # digits only: no nan; huge -> inf
        if not all(0.0 <= v <= self.frame for v in (x1, y1, x2, y2)):
            return None
        if not (x1 < x2 and y1 < y2):
            return None
        return x1, y1, x2, y2

    def parse_grid(self, text) -> GridBox | None:
        """Like ``parse`` but snapped back to grid lines (exact for this codec's own answers)."""
        box = self.parse(text)
        return None if box is None else self.to_grid(box)


# ---- box arrays ---------------------------------------------------------------------------------
def _as_boxes(boxes) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.shape[-1:] != (4,):
        raise ValueError(f"boxes must have a last axis of 4 (xyxy), got shape {arr.shape}")
    return arr


def scale_box(box, from_size: tuple[float, float], to_size: tuple[float, float]) -> Box:
    """Rescale an xyxy box from an image of ``(W, H)`` to one of ``(W', H')`` (per-axis)."""
    (fw, fh), (tw, th) = from_size, to_size
    x1, y1, x2, y2 = (float(v) for v in box)
    sx, sy = tw / fw, th / fh
    return x1 * sx, y1 * sy, x2 * sx, y2 * sy


def box_area(boxes) -> np.ndarray:
    """Area of xyxy boxes (..., 4) -> (...); a degenerate (inverted) box has area 0."""
    b = _as_boxes(boxes)
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def iou(a, b) -> np.ndarray:
    """Element-wise IoU of xyxy boxes, broadcasting over leading axes: (..., 4) x (..., 4) -> (...).

    IoU is 0 where the boxes do not overlap (also when both are empty), as in pycocotools."""
    a, b = _as_boxes(a), _as_boxes(b)
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    union = box_area(a) + box_area(b) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(inter > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return np.clip(out, 0.0, 1.0)


def iou_matrix(a, b) -> np.ndarray:
    """Pairwise IoU: (N, 4) x (M, 4) -> (N, M)."""
    a, b = _as_boxes(a).reshape(-1, 4), _as_boxes(b).reshape(-1, 4)
    return iou(a[:, None, :], b[None, :, :])

