"""What a picture backend of the generate stage is given and gives back.

The backends (:mod:`pin.synth.emoji`, :mod:`pin.synth.diffusers_backend`) and the stage runner
(:mod:`pin.synth.generate`) both import these types from here, so neither imports the other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
from PIL import Image

from pin.categories import Category, query_name
from pin.errors import PinError

IMAGES = "images"  # the pictures' folder under the objects folder


@dataclass(frozen=True)
class Job:
    """One picture to make."""

    category: Category
    split: str
    index: int
    seed: int
    prompt: str

    @property
    def rel_path(self) -> str:
        return f"{IMAGES}/{self.category.slug}/{self.index:04d}.png"


@dataclass
class Rendered:
    """A finished picture: the cropped RGBA cut-out and the share of the canvas it covered
    before cropping, or ``image=None`` when the foreground extractor found no object."""

    image: Image.Image | None
    mask_area_frac: float = 0.0

    @classmethod
    def from_cutout(cls, rgba: Image.Image | None, canvas_pixels: int) -> "Rendered":
        """Crop ``rgba`` tight to alpha > 0; the area is counted before cropping (the crop
        only removes transparent pixels, so a cut-out that is already cropped counts the same)."""
        if rgba is None:
            return cls(None)
        rgba = rgba.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"))
        area = int((alpha > 0).sum())
        if area == 0:
            return cls(None)
        box = rgba.getchannel("A").getbbox()
        return cls(rgba.crop(box), area / float(canvas_pixels))


class Generator(Protocol):
    """What a backend provides. ``render`` gets at most ``batch_size`` jobs of one category."""

    name: str
    batch_size: int

    def covers(self, category: Category) -> bool: ...

    def prompt(self, category: Category) -> str: ...

    def render(self, jobs: Sequence[Job]) -> list[Rendered]: ...

    def config(self) -> dict: ...


def prompt_from_template(template: str, category: Category) -> str:
    """``generate.prompt`` with ``{name}`` filled in by the category's query name."""
    try:
        return template.format(name=query_name(category.name))
    except (KeyError, IndexError, ValueError) as err:
        raise PinError(f"generate.prompt: the template may only use {{name}} ({err!r})") from None


__all__ = ["IMAGES", "Job", "Rendered", "Generator", "prompt_from_template"]
