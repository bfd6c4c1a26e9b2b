"""The mini VLM's vision objective: the open_clip ViT alone learns which categories (and, with
``pretrain.vision_levels``, which appearance levels) an image holds, never where.

Each patch token gets a linear class score and the image score is the max over patches
(multiple-instance learning); each label group is a softmax against its normalised multi-hot
label (Mahajan et al. 2018).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from pin.categories import query_name
from pin.composed import ComposedImage
from pin.progress import tqdm

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def normalise(u8: torch.Tensor) -> torch.Tensor:
    return (u8.float() / 255 - CLIP_MEAN.to(u8.device)) / CLIP_STD.to(u8.device)


@dataclass
class VisionResult:
    steps: int
    seconds: float
    final_loss: float
    map: float  # mean average precision over classes on held-back images
    level_map: float = float("nan")  # the same over the appearance-level labels, when trained


def pretrain_vision(flamingo, u8: torch.Tensor, labels: torch.Tensor, *, steps: int, lr: float, batch_size: int,
                    seed: int, eval_u8: torch.Tensor | None = None, eval_labels: torch.Tensor | None = None,
                    groups: tuple[int, ...] | None = None) -> VisionResult:
    """``groups``: the label columns' group sizes (categories first, then e.g. brightness and
    saturation levels), each its own softmax, so extra label kinds do not dilute the categories'
    target; mAP is reported for the first group (``map``) and the rest (``level_map``)."""
    groups = groups or (labels.shape[1],)
    if sum(groups) != labels.shape[1]:
        raise ValueError(f"label groups {groups} do not add up to {labels.shape[1]} columns")
    visual = flamingo.vision_encoder
    dev = next(visual.parameters()).device
    with torch.no_grad():
        width = visual(normalise(u8[:1].to(dev)))[1].shape[-1]
    head = torch.nn.Linear(width, labels.shape[1]).to(dev)
    params = list(visual.parameters()) + list(head.parameters())
    for p in params:
        p.requires_grad_(True)
    visual.train()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    t0, ema = time.perf_counter(), None
    bar = tqdm(range(steps), desc="pretrain vision", unit="step")
    for _ in bar:
        idx = torch.randint(len(u8), (batch_size,), generator=gen)
        x = normalise(u8[idx].to(dev, non_blocking=True))
        if torch.rand((), generator=gen) < 0.5:  # flips keep labels valid and carry no position
            x = x.flip(-1)
        tokens = visual(x)[1]
        logits = head(tokens).amax(dim=1)
        # Softmax over classes against the normalised multi-hot label (Mahajan et al. 2018): with
        # hundreds of classes and ~2 positives per image, per-class BCE sits at the base rate
        # for hundreds of steps; this learns from the first.
        y = labels[idx].to(dev, non_blocking=True)
        loss = sum(_soft_target_loss(lg, yg) for lg, yg in zip(logits.split(groups, 1), y.split(groups, 1)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if bar.n % 10 == 0 or bar.n == steps - 1:  # a host sync every 10th step only
            value = float(loss.detach())
            ema = value if ema is None else 0.8 * ema + 0.2 * value
            bar.set_postfix(loss=f"{ema:.4f}")
    visual.eval()
    mean_ap = level_ap = float("nan")
    if eval_u8 is not None and len(eval_u8):
        with torch.no_grad():
            scores = torch.cat([head(visual(normalise(eval_u8[i:i + 256].to(dev)))[1]).amax(1).cpu()
                                for i in range(0, len(eval_u8), 256)]).numpy()
        first, truth = groups[0], eval_labels.numpy()
        mean_ap = mean_average_precision(scores[:, :first], truth[:, :first])
        # levels are scored only where the probe holds several (V1's held-out objects all sit at
        # level 0, where every ranking is perfect and the number would say nothing)
        if len(groups) > 1 and (truth[:, first:].sum(0) > 0).sum() > len(groups) - 1:
            level_ap = mean_average_precision(scores[:, first:], truth[:, first:])
    return VisionResult(steps, time.perf_counter() - t0, ema or float("nan"), mean_ap, level_ap)


def _soft_target_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    target = y / y.sum(1, keepdim=True).clamp_min(1)
    return -(target * logits.log_softmax(-1)).sum(1).mean()


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    aps = []
    for c in range(labels.shape[1]):
        y = labels[:, c]
        if y.sum() == 0:
            continue
        order = np.argsort(-scores[:, c])
        hits = y[order]
        prec = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        aps.append(float((prec * hits).sum() / hits.sum()))
    return float(np.mean(aps)) if aps else float("nan")


def multi_hot(images: list[ComposedImage], index: dict[str, int]) -> torch.Tensor:
    """Image-level labels (N, classes): which categories an image holds, not where."""
    labels = torch.zeros(len(images), len(index))
    for row, im in enumerate(images):
        for o in im.objects:
            labels[row, index[query_name(o.category)]] = 1
    return labels


def level_hot(images: list[ComposedImage], grid: int = 8) -> torch.Tensor:
    """Image-level labels (N, 2 * grid): which brightness and which saturation levels the image's
    objects have (web captions say "dark", "pale"; never where)."""
    labels = torch.zeros(len(images), 2 * grid)
    for row, im in enumerate(images):
        for o in im.objects:
            if len(o.appearance) == 2:
                labels[row, o.appearance[0]] = 1
                labels[row, grid + o.appearance[1]] = 1
    return labels
