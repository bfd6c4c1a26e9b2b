"""The PIN similarity map of the paper's Figure 9 (App. B, "Visualizing pi").

Following ViT, the cosine similarity of every pair of patch positions is computed for a table of
per-position vectors, and drawn as a G x G mosaic: the cell of patch (row i, column j) is a small
G x G heat map of that patch's similarity with every patch. The paper shows three such panels for
OpenFlamingo (G = 16, every second patch omitted, so 8 x 8 cells):

* the raw 1D sinusoidal table S (PIN's input): high similarity with itself and with patches of
  the same row only - S is 1D over the row-major patch index;
* the frozen vision encoder's patch features, similarities averaged over 50 images: one bright
  spot per cell (the patch itself), i.e. no positional structure;
* the learned pi = psi(S): high similarity with the patch itself and its immediate neighbours.

:func:`locality` turns the maps into numbers (mean similarity with the 4-neighbours, with the
rest of the row and column, with everything else), so the claim can be checked, not just seen.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from pin.frame import FRAME
from pin.viz.png import figure, save_png

PAPER_IMAGES = 50  # encoder panel: similarities averaged over this many images (paper, App. B)
MAX_CELLS = 8  # the paper omits every second of 16 patches "for readability": at most 8 x 8 cells


def cosine_matrix(vectors: torch.Tensor | np.ndarray) -> np.ndarray:
    """(n, d) -> (n, n) cosine similarities (float64; a zero vector has similarity 0)."""
    v = torch.as_tensor(vectors).detach().to("cpu", torch.float64)
    if v.ndim != 2:
        raise ValueError(f"expected (n, d) vectors, got shape {tuple(v.shape)}")
    v = torch.nn.functional.normalize(v, dim=1)
    return (v @ v.T).numpy()


def patch_rows(n_positions: int, grid: int, has_cls: bool) -> slice:
    """Rows of a per-position table that belong to the grid x grid patches (CLS dropped)."""
    want = grid * grid + int(has_cls)
    if n_positions != want:
        raise ValueError(f"{n_positions} positions do not make a {grid}x{grid} patch grid"
                         f"{' plus CLS' if has_cls else ''}")
    return slice(int(has_cls), None)


def stride_for(grid: int, max_cells: int = MAX_CELLS) -> int:
    """Show every ``stride``-th patch so that at most ``max_cells`` cells per side remain."""
    return max(1, -(-grid // max_cells))


def mosaic(sim: np.ndarray, grid: int, stride: int = 1, gap: int = 1) -> np.ndarray:
    """(G*G, G*G) similarities -> one 2D image: the cell of each shown patch (every ``stride``-th
    row and column) is its G x G similarity map; cells are separated by ``gap`` NaN pixels."""
    sim = np.asarray(sim, dtype=float)
    if sim.shape != (grid * grid, grid * grid):
        raise ValueError(f"expected a ({grid * grid}, {grid * grid}) matrix, got {sim.shape}")
    shown = list(range(0, grid, stride))
    k = len(shown)
    side = k * grid + (k - 1) * gap
    out = np.full((side, side), np.nan)
    for a, i in enumerate(shown):
        for b, j in enumerate(shown):
            y, x = a * (grid + gap), b * (grid + gap)
            out[y:y + grid, x:x + grid] = sim[i * grid + j].reshape(grid, grid)
    return out


def locality(sim: np.ndarray, grid: int) -> dict[str, float]:
    """Mean similarity of a patch with its 4-neighbours, with the rest of its row, with the rest
    of its column, and with all farther patches (self excluded everywhere)."""
    sim = np.asarray(sim, dtype=float)
    r, c = np.divmod(np.arange(grid * grid), grid)
    dr, dc = np.abs(r[:, None] - r[None, :]), np.abs(c[:, None] - c[None, :])
    same = (dr == 0) & (dc == 0)
    neighbour = (dr + dc) == 1
    row = (dr == 0) & ~same & ~neighbour
    col = (dc == 0) & ~same & ~neighbour
    far = ~(same | neighbour | row | col)

    def mean(mask):
        return round(float(sim[mask].mean()), 4) if mask.any() else None

    return {"neighbours": mean(neighbour), "same_row": mean(row), "same_column": mean(col),
            "other": mean(far)}


def table_similarity(table: torch.Tensor, grid: int, has_cls: bool = False) -> np.ndarray:
    """Cosine similarities between the patch positions of a per-position table (n, d)."""
    return cosine_matrix(table[patch_rows(table.shape[0], grid, has_cls)])


@torch.no_grad()
def encoder_similarity(vlm, images: Sequence, n_images: int = PAPER_IMAGES, batch_size: int = 25,
                       frame: int = FRAME) -> np.ndarray:
    """The frozen encoder's patch features: per-image patch-pair cosine similarities, averaged
    over the first ``n_images`` images (PIL images or objects with ``.pil()``)."""
    from pin.progress import tqdm

    site = vlm.site
    rows = patch_rows(site.n_positions, site.grid, site.has_cls)
    total, count = None, 0
    images = list(images)[:n_images]
    if not images:
        raise ValueError("need at least one image for the encoder panel")
    for start in tqdm(range(0, len(images), batch_size), desc="figures: encoder features", unit="batch",
                      leave=False):
        batch = [im.pil() if hasattr(im, "pil") else im for im in images[start:start + batch_size]]
        pixels = vlm.preprocess([im.convert("RGB").resize((frame, frame)) for im in batch])
        feats = vlm.patch_features(pixels).to("cpu", torch.float64)[:, rows]
        f = torch.nn.functional.normalize(feats, dim=-1)
        sims = (f @ f.transpose(1, 2)).sum(0)
        total = sims if total is None else total + sims
        count += len(batch)
    return (total / count).numpy()


def similarity_figure(panels: Mapping[str, np.ndarray], grid: int, path: str | Path,
                      title: str | None = None, max_cells: int = MAX_CELLS) -> None:
    """Write a PNG with one mosaic per panel (title -> (G*G, G*G) similarities), side by side,
    each with its own colour bar (viridis; gaps between cells white)."""
    from matplotlib import colormaps

    stride = stride_for(grid, max_cells)
    cmap = colormaps["viridis"].with_extremes(bad="white")
    n = len(panels)
    fig = figure((4.3 * n, 4.9), dpi=110)
    for k, (name, sim) in enumerate(panels.items()):
        ax = fig.add_subplot(1, n, k + 1)
        img = mosaic(sim, grid, stride)
        im = ax.imshow(img, cmap=cmap, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        cell = grid + 1
        shown = list(range(0, grid, stride))
        ticks = [a * cell + (grid - 1) / 2 for a in range(len(shown))]
        ax.set_xticks(ticks, [str(j) for j in shown], fontsize=7)
        ax.set_yticks(ticks, [str(i) for i in shown], fontsize=7)
        ax.set_xlabel("patch column", fontsize=8)
        if k == 0:
            ax.set_ylabel("patch row", fontsize=8)
        ax.tick_params(length=0)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=7)
    omitted = "" if stride == 1 else f"; every {stride}. patch shown"
    fig.suptitle(title or f"cosine similarity between patch positions ({grid}x{grid} patches{omitted})",
                 fontsize=11)
    fig.tight_layout()
    save_png(fig, path)


def insert_panels(insert, vlm=None, images: Sequence = (), n_images: int = PAPER_IMAGES,
                  grid: int | None = None, trained: bool = True) -> tuple[dict[str, tuple[str, np.ndarray]], int]:
    """The Figure 9 panels for a trained insert, ``{key: (title, similarities)}`` with keys
    ``table`` (raw S), ``encoder`` (only when ``vlm`` and ``images`` are given) and ``pi``, and the
    patch grid (default: the square root of the insert's patch positions). ``trained=False``
    (a run of another method: no PIN was trained) leaves out the ``pi`` panel."""
    cfg = insert.config
    n_patches = cfg.n_positions - int(cfg.has_cls)
    grid = grid or int(round(n_patches ** 0.5))
    if grid * grid != n_patches:
        raise ValueError(f"insert has {n_patches} patch positions: not a square grid")
    with torch.no_grad():
        pi = insert()
    panels = {"table": (f"raw {cfg.table} table S (d={cfg.d_table})",
                        table_similarity(insert.table.detach(), grid, cfg.has_cls))}
    if vlm is not None and len(images):
        n = min(n_images, len(images))
        panels["encoder"] = (f"vision encoder features (mean of {n} images)",
                             encoder_similarity(vlm, images, n_images))
    if trained:
        panels["pi"] = (f"learned PIN pi = psi(S) ({cfg.layers} layers)", table_similarity(pi, grid, cfg.has_cls))
    return panels, grid


def write_similarity(insert, path: str | Path, vlm=None, images: Sequence = (),
                     n_images: int = PAPER_IMAGES, trained: bool = True) -> dict[str, dict[str, float]]:
    """Figure 9 for ``insert`` as a PNG at ``path``; returns :func:`locality` per panel."""
    panels, grid = insert_panels(insert, vlm, images, n_images, trained=trained)
    similarity_figure({title: sim for title, sim in panels.values()}, grid, path)
    return {key: locality(sim, grid) for key, (_, sim) in panels.items()}
