"""Running a frozen ViT at a higher input resolution (paper Tab. 3, "Higher resolution").

The ViT's position embeddings were learned on one patch grid; at a larger input the grid grows
and the grid part of the table is resampled (bicubic) to the new grid, the CLS row kept as is -
the usual way (ViT, DeiT, open_clip's ``resize_pos_embed``) and what the PIN authors describe as
extrapolating the frozen position embeddings. Nothing is trained: the encoder stays frozen.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from pin.errors import PinError


def interpolate_grid_embedding(table: torch.Tensor, new_grid: int, n_prefix: int = 1) -> torch.Tensor:
    """(n_prefix + g*g, width) -> (n_prefix + new_grid*new_grid, width), grid rows resampled bicubically."""
    prefix, grid = table[:n_prefix], table[n_prefix:]
    old_grid = round(grid.shape[0] ** 0.5)
    if old_grid * old_grid != grid.shape[0]:
        raise ValueError(f"position table of {table.shape[0]} rows is not {n_prefix} + a square grid")
    if old_grid == new_grid:
        return table.clone()
    image = grid.reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2).float()
    image = F.interpolate(image, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    grid = image.permute(0, 2, 3, 1).reshape(new_grid * new_grid, -1).to(table.dtype)
    return torch.cat([prefix, grid])


def check_image_size(image_size: int, patch: int) -> int:
    """The patch grid side for ``vlm.image_size``; a size that is not a whole number of patches,
    or gives fewer than 2 a side, is a PinError naming the param."""
    if image_size % patch:
        raise PinError(f"vlm.image_size={image_size}: must be a multiple of the vision encoder's patch size "
                       f"{patch} (e.g. {max(2, round(image_size / patch)) * patch})")
    if image_size // patch < 2:
        raise PinError(f"vlm.image_size={image_size}: too small, at least 2 patches of {patch} px a side "
                       f"(>= {2 * patch})")
    return image_size // patch


def interpolate_open_clip(visual: torch.nn.Module, image_size: int) -> None:
    """Make an open_clip ``VisionTransformer`` take ``image_size`` x ``image_size`` inputs."""
    grid = check_image_size(image_size, visual.patch_size[0])
    table = interpolate_grid_embedding(visual.positional_embedding.detach(), grid)
    visual.positional_embedding = torch.nn.Parameter(table, requires_grad=False)
    visual.image_size = (image_size, image_size)
    visual.grid_size = (grid, grid)


def resized_processor(processor, image_size: int):
    """open_clip's eval transform at ``image_size``, with the normalisation of ``processor``."""
    import open_clip
    from torchvision.transforms import Normalize

    norm = next((t for t in getattr(processor, "transforms", []) if isinstance(t, Normalize)), None)
    if norm is None:
        raise ValueError("cannot change the resolution: the image processor has no Normalize step")
    return open_clip.image_transform(image_size, is_train=False, mean=tuple(norm.mean), std=tuple(norm.std))
