"""Figures as PNG files: one way to make a figure and one way to write it.

The bytes depend only on what is drawn: no pyplot state, and no ``Software`` text chunk (which
names the matplotlib version), so the same results give the same file and a rerun leaves git
clean. Written with :func:`pin.io.atomic_write_bytes`: a reader never sees half a PNG.
"""
from __future__ import annotations

import io
from pathlib import Path

from pin.io import atomic_write_bytes

PNG_METADATA = {"Software": None}  # matplotlib's default names its version


def figure(figsize: tuple[float, float], dpi: float = 100):
    """A matplotlib Figure on the Agg canvas, outside pyplot (no global state, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata=PNG_METADATA)
    return buf.getvalue()


def save_png(fig, path: str | Path) -> None:
    """Write ``fig`` as a PNG at ``path`` atomically."""
    atomic_write_bytes(path, png_bytes(fig))
