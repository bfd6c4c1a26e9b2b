"""One way to open a picture, used by every reader of images the project did not write itself:
``pin locate``, the evaluation loaders, compose's background folder and the generated object
PNGs (filter, compose).

What Pillow's ``convert("RGB")`` gets wrong, done right once here:

* 16-bit (``I;16*``), 32-bit integer (``I``) and float (``F``) pictures are *scaled* to 8 bits;
  ``convert`` clips them, so a 16-bit grey photo becomes 99% white.
* Transparency (``RGBA``, ``LA``, ``P``/``L`` with a transparent colour) is laid on white for an RGB
  picture, as a viewer shows it, instead of revealing whatever colour hides under alpha 0.
* The EXIF orientation is applied (a phone photo upright, as it is meant to be seen).
* The whole file is decoded before the picture is returned: a truncated file whose header reads
  is an error here, not a grey band (or a crash) later.
* Pictures larger than :data:`MAX_PIXELS` are refused from the header, before any decoding.

Every failure is an :class:`ImageError` (a PinError) whose message names the file and says why.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from pin.errors import PinError

# Pillow's own decompression-bomb threshold (~89.5 Mpx, a 1 GB RGB buffer...); ours refuses at it
# instead of warning up to twice that.
MAX_PIXELS = 89_478_485

Mode = Literal["RGB", "RGBA"]


class ImageError(PinError):
    """A picture that cannot be used; the message is ``<path>: <why>``."""


def _scaled_to_8bit(im: Image.Image) -> Image.Image:
    """An ``I;16*``, ``I`` or ``F`` picture as ``L``, its range mapped onto 0..255.

    16-bit: /257 (65535 -> 255). ``I`` and ``F`` carry no declared range: values within 0..1
    (float) are fractions, within 0..255 already 8-bit, within 0..65535 16-bit; anything else is
    stretched from its minimum to its maximum."""
    a = np.asarray(im).astype(np.float64)
    if im.mode.startswith("I;16"):
        scaled = a / 257.0
    else:
        finite = a[np.isfinite(a)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if im.mode == "F" and lo >= 0 and hi <= 1:
            scaled = a * 255.0
        elif lo >= 0 and hi <= 255:
            scaled = a
        elif lo >= 0 and hi <= 65535:
            scaled = a / 257.0
        else:
            scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def to_mode(im: Image.Image, mode: Mode = "RGB") -> Image.Image:
    """A decoded picture in ``mode`` (RGB: transparency laid on white; RGBA: alpha kept)."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        im = _scaled_to_8bit(im)
    if im.mode == "CMYK" or im.mode == "YCbCr" or im.mode == "LAB" or im.mode == "HSV":
        im = im.convert("RGB")
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if mode == "RGBA":
        return im if im.mode == "RGBA" else im.convert("RGBA")
    if not has_alpha:
        return im if im.mode == "RGB" else im.convert("RGB")
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def open_image(path: str | Path, mode: Mode = "RGB", *, draft: int | None = None,
               upright: bool = True) -> Image.Image:
    """The picture at ``path``, fully decoded, in ``mode``.

    ``draft``: let a JPEG decode at a reduced scale whose shorter side stays >= ``draft`` (the
    DCT downscale: several times faster for a large photo; every byte is still read, so a
    truncated file still fails). ``upright``: apply the EXIF orientation.
    Raises :class:`ImageError` naming ``path`` for a missing, unreadable, truncated, empty or
    too large file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w < 1 or h < 1:
                    raise ImageError(f"{path}: empty image ({w}x{h})")
                if w * h > MAX_PIXELS:
                    raise ImageError(f"{path}: over the {MAX_PIXELS:,}-pixel limit (a decompression bomb, or a "
                                     f"picture to shrink first; {w}x{h} = {w * h:,} pixels)")
                if draft and im.format == "JPEG":
                    im.draft("RGB", (draft, draft))
                im.load()
                out = to_mode(ImageOps.exif_transpose(im) if upright else im, mode)
                return out.copy() if out is im else out  # closing the file frees im's pixels
    except ImageError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:  # Pillow's check, at open
        raise ImageError(f"{path}: over the {MAX_PIXELS:,}-pixel limit (a decompression bomb, or a picture to "
                         f"shrink first; {err})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        # Pillow: "image file is truncated (N bytes not processed)", "broken data stream", ...
        raise ImageError(f"{path}: cannot decode the image ({type(err).__name__}: {err})") from None


__all__ = ["open_image", "to_mode", "ImageError", "MAX_PIXELS"]
