"""OpenFlamingo's in-context learning as a localisation baseline (paper Sec. 5.1, Tab. 1 rows
"k context", Tab. 2 "In-context learning").

Before each query the VLM sees ``k`` context images from the synthetic training set, each
followed by the PIN prompt for one of its objects and that object's box answer, in
OpenFlamingo's interleaved few-shot format::

    <image>In the image is a cup located at [28,56,112,168]<|endofchunk|> ... <image>In the image is a dog located at

For each ``k`` the context is drawn ``repeats`` times (seeded by (seed, k, repeat)); one draw is
shared by every query of that repeat, so the spread over repeats is the effect of which context
images were chosen - what the paper reports as mean +- std over its ten runs. Nothing is trained.
"""
from __future__ import annotations

import numpy as np
import torch
from pin.progress import tqdm

from pin.boxes import BoxCodec
from pin.composed import ComposedImage
from pin.eval import metrics
from pin.frame import model_side


def draw_context(pool: list[ComposedImage], k: int, seed: int, repeat: int) -> list[tuple[int, int]]:
    """``k`` distinct (image index, object index) pairs from ``pool``, a pure function of the seeds."""
    if k > len(pool):
        raise ValueError(f"{k} context images requested, the training split has {len(pool)}")
    rng = np.random.default_rng([seed, k, repeat])
    images = rng.choice(len(pool), size=k, replace=False)
    return [(int(i), int(rng.integers(len(pool[int(i)].objects)))) for i in images]


def context_text(vlm, codec: BoxCodec, pool: list[ComposedImage], drawn: list[tuple[int, int]]) -> str:
    """The context examples as one interleaved prompt prefix (one ``<image>`` each)."""
    parts = []
    for i, j in drawn:
        obj = pool[i].objects[j]
        parts.append(vlm.prompt(obj.referral) + codec.encode(obj.grid_box) + vlm.answer_end)
    return "".join(parts)


@torch.no_grad()
def context_features(vlm, pool: list[ComposedImage], drawn: list[tuple[int, int]]) -> torch.Tensor:
    """Patch features (k, n_positions, width) of the context images, seen as the queries are."""
    side = model_side(vlm.input_size)
    images = [pool[i].pil().resize((side, side)) for i, _ in drawn]
    return vlm.patch_features(vlm.preprocess(images)).float().cpu()


@torch.no_grad()
def answer_in_context(vlm, feats: torch.Tensor, rows: list[int], texts: list[str], ctx_feats: torch.Tensor,
                      ctx_text: str, max_new_tokens: int, batch_size: int, desc: str, num_beams: int = 1) -> list[str]:
    """Each query's answer with the context before it: features (B, k+1, n_positions, width)."""
    out: list[str] = []
    k = ctx_feats.shape[0]
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch", leave=False):
        query = feats[rows[start:start + batch_size]]
        both = torch.cat([ctx_feats.expand(len(query), k, *ctx_feats.shape[1:]), query[:, None]], dim=1)
        prompts = [ctx_text + vlm.prompt(t) for t in texts[start:start + batch_size]]
        out += vlm.generate(both.to(vlm.device), prompts, max_new_tokens=max_new_tokens, num_beams=num_beams)
    return out


def run_incontext(vlm, feats: torch.Tensor, rows: list[int], texts: list[str], pool: list[ComposedImage],
                  codec: BoxCodec, shots: tuple[int, ...], repeats: int, seed: int, max_new_tokens: int,
                  batch_size: int, num_beams: int = 1) -> dict[int, list[list[str]]]:
    """``{k: [answers of repeat 0, answers of repeat 1, ...]}``."""
    if not vlm.supports_interleaved_images:
        raise ValueError(f"{vlm.name} cannot take several images per prompt")
    answers: dict[int, list[list[str]]] = {}
    for k in shots:
        answers[k] = []
        for r in range(repeats):
            drawn = draw_context(pool, k, seed, r)
            answers[k].append(answer_in_context(
                vlm, feats, rows, texts, context_features(vlm, pool, drawn), context_text(vlm, codec, pool, drawn),
                max_new_tokens, batch_size, desc=f"{k} context, draw {r + 1}/{repeats}", num_beams=num_beams))
    return answers


def incontext_metrics(answers: dict[int, list[list[str]]], gt_224: np.ndarray, image_ids, parse
                      ) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """Rows ``incontext_<k>``: every metric averaged over the draws, ``<metric>_std`` its spread
    over draws (``draws`` = repeats); and the first draw's answers per row (for the predictions file)."""
    rows, first = {}, {}
    for k, draws in answers.items():
        name = f"incontext_{k}"
        rows[name] = metrics.mean_std([metrics.score(gt_224, parse(a), image_ids) for a in draws])
        first[name] = draws[0]
    return rows, first
