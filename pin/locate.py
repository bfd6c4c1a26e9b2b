"""Locate one object in one picture of any size: what ``pin locate`` does.

The frozen VLM reads a square frame (224 px; the mini VLM then scales it to its 64 px input, an
encoder run at a higher resolution gets the picture at its own size) and answers a box on the
``G x G`` grid of the 224 frame. A picture of any size is brought into the
frame in one of two ways, and the answer is mapped back to the picture's own pixels:

* ``resize`` (default): squashed to 224 x 224, as the evaluate stage and BLIP-2's processor do;
  the box is scaled back per axis.
* ``letterbox``: scaled to fit, the rest padded with grey (aspect ratio kept); the box is scaled
  back and the padding subtracted, then clipped to the picture.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from PIL import Image, ImageDraw, ImageFont

from pin.boxes import BoxCodec
from pin.errors import PinError
from pin.frame import FRAME, model_side
from pin.images import open_image, to_mode  # noqa: F401 - open_image: the CLI's reader

PAD_COLOUR = (124, 116, 104)  # close to the CLIP mean: the padding reads as "nothing"
Fit = Literal["resize", "letterbox"]
_ARTICLE = re.compile(r"^(?:a|an|the)\s+", re.IGNORECASE)


@dataclass(frozen=True)
class Framing:
    """How a picture of ``size`` (W, H) sits in the square frame: frame = picture * scale + offset."""

    size: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[float, float]

    def to_picture(self, box) -> tuple[float, float, float, float]:
        """Frame-coordinate xyxy box -> the picture's pixels, clipped to the picture."""
        (sx, sy), (ox, oy), (w, h) = self.scale, self.offset, self.size
        x1, y1, x2, y2 = ((float(box[0]) - ox) / sx, (float(box[1]) - oy) / sy,
                          (float(box[2]) - ox) / sx, (float(box[3]) - oy) / sy)
        return (min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h))


def frame_image(image: Image.Image, fit: Fit = "resize", frame: int = FRAME) -> tuple[Image.Image, Framing]:
    """The picture as the model's square frame, and the mapping back to its pixels."""
    image = to_mode(image, "RGB")
    w, h = image.size
    if w < 1 or h < 1:
        raise PinError(f"empty image ({w}x{h})")
    if fit == "resize":
        return image.resize((frame, frame), Image.BICUBIC), Framing((w, h), (frame / w, frame / h), (0.0, 0.0))
    if fit == "letterbox":
        s = frame / max(w, h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        ox, oy = (frame - nw) // 2, (frame - nh) // 2
        canvas = Image.new("RGB", (frame, frame), PAD_COLOUR)
        canvas.paste(image.resize((nw, nh), Image.BICUBIC), (ox, oy))
        return canvas, Framing((w, h), (nw / w, nh / h), (float(ox), float(oy)))
    raise PinError(f"fit must be 'resize' or 'letterbox', got {fit!r}")


def object_name(query: str) -> str:
    """"a dog" -> "dog": the prompt already says "In the image is a {obj} located at"."""
    name = " ".join(query.split())
    name = _ARTICLE.sub("", name)
    if not name:
        raise PinError("the query is empty: say what to look for, e.g. \"a dog\"")
    return name


@dataclass(frozen=True)
class Located:
    query: str
    answer: str  # the model's raw text
    frame_box: tuple[float, float, float, float] | None  # in the 224 frame; None when unparsable
    box: tuple[float, float, float, float] | None  # in the picture's pixels
    size: tuple[int, int]
    fit: str
    warning: str | None = None  # e.g. query words the VLM has never seen

    def to_dict(self) -> dict:
        r = lambda b: None if b is None else [round(v, 1) for v in b]  # noqa: E731
        return {"query": self.query, "answer": self.answer, "box": r(self.box), "frame_box": r(self.frame_box),
                "image_size": list(self.size), "fit": self.fit}


def answer_grid(insert_dir: str | Path, fallback: int) -> tuple[int, str | None]:
    """The box grid the method in ``insert_dir`` was trained on (recorded in its config.json by
    the train stage), or - for a folder saved before grids were recorded - ``fallback`` and a
    warning saying so."""
    from pin.saved import saved_grid

    grid = saved_grid(insert_dir)
    if grid is not None:
        return grid, None
    return fallback, (f"{Path(insert_dir) / 'config.json'} records no box grid (saved before the train stage "
                      f"recorded it): assuming grid {fallback}; pass --grid if it was trained on another, or "
                      "retrain it with `dvc repro train`")


@torch.no_grad()
def locate(vlm, method, image: Image.Image, query: str, grid: int,
           fit: Fit = "resize", num_beams: int = 1) -> Located:
    """Ask the frozen VLM (with a trained ``method`` of :mod:`pin.methods` - PIN's insert or a
    baseline - or raw when None) where ``query`` is in ``image``. ``Located.warning`` names query
    words the VLM cannot read."""
    side = model_side(getattr(vlm, "input_size", FRAME))  # a stand-in VLM may lack it
    framed, framing = frame_image(image, fit, frame=side)
    codec = BoxCodec(grid)
    name = object_name(query)
    check = getattr(vlm, "vocabulary_warning", None)  # FrozenVLM's; a stand-in VLM may lack it
    warning = check([name]) if check is not None else None
    pixels = vlm.preprocess([framed])
    conditioning = {}
    if method is None or not method.encodes_pixels:
        feats = vlm.patch_features(pixels)
    else:
        feats = method.features(vlm, pixels)
    if method is not None:
        conditioning = {k: v.detach().to(feats.device) for k, v in method.conditioning().items()}
    answer = vlm.generate(feats, [vlm.prompt(name)], max_new_tokens=codec.max_answer_chars + 2,
                          num_beams=num_beams, **conditioning)[0]
    frame_box = codec.parse(answer)
    box = None if frame_box is None else framing.to_picture([v * side / FRAME for v in frame_box])
    return Located(query, answer, frame_box, box, framing.size, fit, warning)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):
        return ImageFont.load_default()


def draw_box(image: Image.Image, located: Located, colour=(230, 0, 0)) -> Image.Image:
    """A copy of ``image`` with the box and the query written on it (or "no box" when unparsable)."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    line = max(2, round(min(w, h) / 150))
    font = _font(max(12, round(min(w, h) / 22)))
    if located.box is None:
        draw.text((line * 2, line * 2), f"no box for {located.query!r}: {located.answer.strip()!r}", fill=colour,
                  font=font, stroke_width=max(1, line // 2), stroke_fill="white")
        return out
    x1, y1, x2, y2 = located.box
    draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=line)
    label = located.query
    tx, ty = x1 + line, y1 + line
    l, t, r, b = draw.textbbox((tx, ty), label, font=font)
    draw.rectangle([l - line, t - line, r + line, b + line], fill=colour)
    draw.text((tx, ty), label, fill="white", font=font)
    return out
