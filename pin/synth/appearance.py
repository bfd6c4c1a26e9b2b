"""Per-object appearance levels (issue 19's appearance-read corners).

The offline mini VLM is pretrained to write the named object's box corner from how the object
*looks*: a brightness level ``a`` and a saturation level ``s``, applied when compose pastes it.
An input-agnostic positional insert can then move the answer by adding a code to the object's
own patch features - which it cannot do when the corner is free or read from a patch count.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from pin.params import ComposeParams

# Level 0 is the object as drawn; level G-1 darkens it to BRIGHT_MIN of its brightness (a) and
# blends it towards its own grey until SAT_MIN of its saturation is left (s). Both stay far from
# black and grey so the object remains recognisable.
BRIGHT_MIN, SAT_MIN = 0.45, 0.35
LEVEL_STREAM = 77  # the levels' own random stream: layouts are identical whatever compose.appearance is


def appearance_levels(seed: int, boxes, p: ComposeParams, split: str) -> list[tuple[int, ...]]:
    """Per-object appearance levels ``(a, s)`` (issue 19's appearance-read corners).

    ``a`` is uniform in 0..G-w and ``s`` in 0..G-h (w, h: the object's size in grid cells), so the
    mini VLM's pretraining answer ``[cell*a, cell*s, cell*a + width, cell*s + height]`` is always
    a box inside the frame. They come from the image seed's own stream and the object's size only,
    never from its place: the pretraining texts stay free of positions.
    ``compose.appearance``: none (no levels recorded), pretrain (the pretraining split jittered,
    PIN's splits at level 0), all (every split jittered)."""
    if p.appearance == "none":
        return [() for _ in boxes]
    if split != "pretrain" and p.appearance == "pretrain":
        return [(0, 0) for _ in boxes]
    rng = np.random.default_rng([seed & 0xFFFFFFFF, seed >> 32, LEVEL_STREAM])
    return [(int(rng.integers(0, p.grid - (i2 - i1) + 1)), int(rng.integers(0, p.grid - (j2 - j1) + 1)))
            for i1, j1, i2, j2 in boxes]


def apply_appearance(picture: Image.Image, a: int, s: int, grid: int) -> Image.Image:
    """Brightness factor ``1 - (1 - BRIGHT_MIN) * a / (G - 1)`` and saturation factor
    ``1 - (1 - SAT_MIN) * s / (G - 1)`` (a blend towards the pixel's grey); alpha kept."""
    if a == 0 and s == 0:
        return picture
    arr = np.asarray(picture.convert("RGBA")).astype(np.float32)
    rgb = arr[..., :3]
    grey = (rgb @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    fs = 1 - (1 - SAT_MIN) * s / (grid - 1)
    fb = 1 - (1 - BRIGHT_MIN) * a / (grid - 1)
    arr[..., :3] = np.clip((grey + fs * (rgb - grey)) * fb + 0.5, 0, 255)
    return Image.fromarray(arr.astype(np.uint8), "RGBA")
