"""Pictures for the evaluate stage: a gallery of answers and mIoU by object size.

Both render to bytes and write with ``pin.io.atomic_write_bytes``: a reader never sees half a PNG.
"""
from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pin.frame import FRAME
from pin.io import atomic_write_bytes
from pin.viz.png import figure, save_png

COLS = 4
PAD = 4
CAPTION = 40  # two lines of 15 px text under each tile
GT, PRED = (0, 200, 0), (230, 0, 0)


def _font(size: int = 15):
    try:
        return ImageFont.load_default(size=size)  # scalable DejaVu when FreeType is available
    except (TypeError, OSError):
        return ImageFont.load_default()


def gallery_size(n: int, cols: int = COLS) -> tuple[int, int]:
    """(width, height) of the PNG ``gallery`` writes for ``n`` tiles."""
    rows = max(1, math.ceil(n / cols))
    cols = max(1, min(cols, n))
    return cols * (FRAME + PAD) + PAD, rows * (FRAME + CAPTION + PAD) + PAD


def pick(total: int, n: int) -> list[int]:
    """``n`` evenly spaced indices into ``total`` queries (deterministic, spread over images)."""
    if total <= n:
        return list(range(total))
    return sorted({int(round(i)) for i in np.linspace(0, total - 1, n)})


def _tile(image: Image.Image, gt, pred, text: str, font) -> Image.Image:
    tile = Image.new("RGB", (FRAME, FRAME + CAPTION), "white")
    tile.paste(image.convert("RGB").resize((FRAME, FRAME), Image.BILINEAR), (0, 0))
    draw = ImageDraw.Draw(tile)
    draw.rectangle(_clip(gt), outline=GT, width=3)
    if pred is None:
        draw.text((6, 4), "unparsable", fill=PRED, font=font, stroke_width=2, stroke_fill="white")
    else:
        draw.rectangle(_clip(pred), outline=PRED, width=2)
    lines = textwrap.wrap(text, width=28)[:2] or [""]
    if len(textwrap.wrap(text, width=28)) > 2:
        lines[1] = lines[1][:25] + "..."
    draw.multiline_text((4, FRAME + 2), "\n".join(lines), fill="black", font=font, spacing=2)
    return tile


def _clip(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    return [max(0.0, min(x1, FRAME - 1)), max(0.0, min(y1, FRAME - 1)),
            max(0.0, min(x2, FRAME - 1)), max(0.0, min(y2, FRAME - 1))]


def gallery(queries: Sequence, preds: Sequence, path: str | Path, n: int = 16) -> list[int]:
    """A grid PNG of up to ``n`` queries (evenly spaced over the list): the image squashed to
    224x224 as the model sees it, ground truth in green, the prediction (224 frame) in red or
    "unparsable", the query text underneath. Returns the indices drawn."""
    if len(queries) != len(preds):
        raise ValueError("one prediction per query")
    idx = pick(len(queries), n)
    w, h = gallery_size(len(idx))
    sheet = Image.new("RGB", (w, h), (235, 235, 235))
    font = _font()
    for k, i in enumerate(idx):
        q = queries[i]
        p = preds[i]
        p = None if p is None or not np.isfinite(np.asarray(p, dtype=float)).all() else p
        tile = _tile(q.load_image(), q.gt_box_224, p, q.text, font)
        r, c = divmod(k, COLS)
        sheet.paste(tile, (PAD + c * (FRAME + PAD), PAD + r * (FRAME + CAPTION + PAD)))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    atomic_write_bytes(path, buf.getvalue())
    return idx


def size_bucket_bars(metrics_by_method: dict[str, dict], path: str | Path, title: str = "") -> None:
    """Bar plot of mIoU by ground-truth size (s/m/l/all) per method; ``*_std`` as error bars,
    empty buckets (null) marked "n/a"."""
    keys = [("miou_s", "small"), ("miou_m", "medium"), ("miou_l", "large"), ("miou", "all")]
    methods = list(metrics_by_method)
    fig = figure((7, 3.6))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(keys))
    for j, m in enumerate(methods):
        vals = [metrics_by_method[m].get(k) for k, _ in keys]
        errs = [metrics_by_method[m].get(f"{k}_std") or 0.0 for k, _ in keys]
        pos = x - 0.4 + width * (j + 0.5)
        heights = [0.0 if v is None else v for v in vals]
        ax.bar(pos, heights, width, yerr=errs if any(errs) else None, label=m, capsize=2)
        for px, v, e in zip(pos, vals, errs):
            ax.text(px, 0.01 if v is None else v + e + 0.01, "n/a" if v is None else f"{v:.2f}",
                    ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [label for _, label in keys])
    ax.set_ylim(0, 1)
    ax.set_ylabel("mIoU")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, ncols=min(4, max(1, len(methods))), loc="upper left")
    fig.tight_layout()
    save_png(fig, path)
