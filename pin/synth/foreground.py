"""Foreground extraction: a generated RGB picture of one object on a plain background -> an RGBA
cut-out of that object (or ``None`` when no object can be found).

Extractors are plain functions of type :data:`ForegroundFn`, registered by name in
:data:`EXTRACTORS` (``generate.matting`` picks one). The default, ``"threshold"``, suits the
paper's prompt ("..., white background"): pixels far from the background colour are object,
cleaned with morphology, and the largest connected component is kept (as X-Paste does).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

from pin.errors import PinError

ForegroundFn = Callable[[Image.Image], "Image.Image | None"]


def border_colour(rgb: np.ndarray, width: int = 2) -> np.ndarray:
    """Median colour of the outermost ``width`` pixels: the background of a centred object."""
    h, w = rgb.shape[:2]
    width = max(1, min(width, h // 2, w // 2))
    edge = np.concatenate([
        rgb[:width].reshape(-1, 3), rgb[-width:].reshape(-1, 3),
        rgb[:, :width].reshape(-1, 3), rgb[:, -width:].reshape(-1, 3),
    ])
    return np.median(edge, axis=0)


def threshold_foreground(
    image: Image.Image,
    *,
    threshold: float = 40.0,
    min_area_frac: float = 0.002,
    background: tuple[int, int, int] | None = None,
) -> Image.Image | None:
    """Cut the object out of a plain (white) background.

    Distance from the background colour (the border's median, i.e. white for the paper's prompt,
    unless ``background`` is given) above ``threshold`` marks object pixels; a closing joins
    thin parts, holes are filled (white parts inside the object stay), an opening drops specks,
    and the largest connected component is kept. Returns the RGBA crop of that component, or
    ``None`` when it covers less than ``min_area_frac`` of the image.
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w = rgb.shape[:2]
    bg = np.asarray(background, dtype=np.float32) if background is not None else border_colour(rgb)
    dist = np.sqrt(((rgb - bg) ** 2).sum(axis=-1))
    mask = dist > threshold
    radius = max(1, round(min(h, w) / 256))
    structure = ndimage.generate_binary_structure(2, 2)
    structure = ndimage.iterate_structure(structure, radius)
    mask = ndimage.binary_closing(mask, structure=structure, border_value=0)
    mask = ndimage.binary_fill_holes(mask)
    mask = ndimage.binary_opening(mask, structure=structure)
    labels, n = ndimage.label(mask)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    best = int(np.argmax(sizes)) + 1
    if sizes[best - 1] < min_area_frac * h * w:
        return None
    keep = labels == best
    rgba = np.dstack([rgb.astype(np.uint8), (keep * 255).astype(np.uint8)])
    ys, xs = np.nonzero(keep)
    return Image.fromarray(rgba, "RGBA").crop((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))


EXTRACTORS: dict[str, ForegroundFn] = {"threshold": threshold_foreground}


def get_extractor(name: str) -> ForegroundFn:
    try:
        return EXTRACTORS[name]
    except KeyError:
        raise PinError(f"unknown foreground extractor {name!r}; known: {sorted(EXTRACTORS)}") from None
