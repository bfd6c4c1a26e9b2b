"""Procedural shapes: a tiny, fully offline object domain for testing the pipeline end to end.

Classes are a colour and a shape ("red circle", "blue star", ...): 6 shapes x 4 flat colours =
24 categories, of which :data:`HELDOUT` (one per shape, every colour at least once) are the
zero-shot split - the model has seen each shape and each colour in training, never the pair.
Each picture is one shape drawn with Pillow in its flat colour on a transparent canvas, with a
random aspect, rotation and size from its seed, so the generate stage's cut-out, manifest and
everything downstream (filter, compose, COCO export) treat it like an emoji or an SD object.

Unlike the openmoji backend, which picks the categories of an LVIS/COCO/VOC set it can draw,
this backend *is* its category set: :meth:`ShapesGenerator.categories` lists them with their
split, and ``generate.category_set`` plays no part.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from pin.categories import Category

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
}
# shape i is held out in colour (i + 2) mod 4: blue, yellow, red, green, blue, yellow
HELDOUT = frozenset(f"{list(COLOURS)[(i + 2) % len(COLOURS)]} {s}" for i, s in enumerate(SHAPES))
DATASET = "shapes"


def shape_categories() -> list[tuple[Category, str]]:
    """Every class with its split ("train" | "heldout"), colour-major, ids 1..24."""
    out = []
    for k, (colour, shape) in enumerate((c, s) for c in COLOURS for s in SHAPES):
        name = f"{colour} {shape}"
        out.append((Category(name=name, synonyms=(name,), id=k + 1, dataset=DATASET),
                    "heldout" if name in HELDOUT else "train"))
    return out


def _polygon(shape: str) -> list[tuple[float, float]] | None:
    """Vertices on the unit square [0, 1]^2 (None: the circle, drawn as an ellipse)."""
    if shape == "square":
        return [(0, 0), (1, 0), (1, 1), (0, 1)]
    if shape == "triangle":
        return [(0.5, 0), (1, 1), (0, 1)]
    if shape == "diamond":
        return [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)]
    if shape == "cross":
        a, b = 1 / 3, 2 / 3
        return [(a, 0), (b, 0), (b, a), (1, a), (1, b), (b, b), (b, 1), (a, 1), (a, b), (0, b), (0, a), (a, a)]
    if shape == "star":
        pts = []
        for i in range(10):
            r = 0.5 if i % 2 == 0 else 0.2
            t = -math.pi / 2 + i * math.pi / 5
            pts.append((0.5 + r * math.cos(t), 0.5 + r * math.sin(t)))
        return pts
    if shape == "circle":
        return None
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def render_shape(shape: str, colour: str, seed: int, canvas: int) -> Image.Image:
    """One picture: the shape in its flat colour on a transparent ``canvas`` x ``canvas`` RGBA
    image, alpha 0 or 255 only (no anti-aliasing: every object pixel has exactly the class
    colour). Random from ``seed``: aspect 0.75-1.33, rotation +-15 degrees (not for the circle,
    whose aspect already varies it), size 50-90 % of the canvas, position."""
    rng = np.random.default_rng(seed)
    rgb = COLOURS[colour]
    aspect = float(np.exp(rng.uniform(np.log(0.75), np.log(4 / 3))))
    side = float(rng.uniform(0.5, 0.9)) * canvas
    w, h = (side, side / aspect) if aspect >= 1 else (side * aspect, side)
    big = int(math.ceil(math.hypot(w, h))) + 2
    im = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(im)
    x0, y0 = (big - w) / 2, (big - h) / 2
    pts = _polygon(shape)
    if pts is None:
        draw.ellipse([x0, y0, x0 + w, y0 + h], fill=(*rgb, 255))
    else:
        draw.polygon([(x0 + u * w, y0 + v * h) for u, v in pts], fill=(*rgb, 255))
        im = im.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.NEAREST)
    im = im.crop(im.getchannel("A").getbbox())
    if max(im.size) > canvas:
        im = im.crop((0, 0, min(im.width, canvas), min(im.height, canvas)))
    out = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    out.paste(im, (int(rng.integers(0, canvas - im.width + 1)), int(rng.integers(0, canvas - im.height + 1))))
    return out


class ShapesGenerator:
    """The ``generate.backend: shapes`` backend (see the module docstring)."""

    name = "shapes"
    batch_size = 1

    def __init__(self, image_size: int):
        self.image_size = image_size
        self._split = {c.name: s for c, s in shape_categories()}

    def categories(self, max_categories: int | None = None) -> list[tuple[Category, str]]:
        """The classes with their split; ``max_categories`` = N keeps the first N of each split."""
        chosen, taken = [], {"train": 0, "heldout": 0}
        for cat, split in shape_categories():
            if max_categories is None or taken[split] < max_categories:
                taken[split] += 1
                chosen.append((cat, split))
        return chosen

    def covers(self, category) -> bool:
        return category.name in self._split

    def prompt(self, category) -> str:
        return f"shapes:{category.name}"

    def render(self, jobs: Sequence) -> list:
        from pin.synth.backend import Rendered

        out = []
        for job in jobs:
            colour, shape = job.category.name.split(" ", 1)
            canvas = render_shape(shape, colour, job.seed, self.image_size)
            out.append(Rendered.from_cutout(canvas, self.image_size * self.image_size))
        return out

    def config(self) -> dict:
        return {"shapes": list(SHAPES), "colours": {k: list(v) for k, v in COLOURS.items()},
                "heldout": sorted(HELDOUT)}
