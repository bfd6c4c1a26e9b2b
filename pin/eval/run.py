"""The evaluate stage (``run_evaluate``): every method answers every query of one dataset;
metrics per object.

Methods side by side: the trained method (``pin`` by default, or a baseline of ``pin.methods``
under its own name: ``vpt_fusion``, ``vpt_vision``, ``coop_llm``, ``lora_vision``), ``raw`` (same
frozen VLM and prompt, nothing added), ``random`` (training boxes drawn at random, mean/std over
draws), ``constant`` (the one box with the best mean IoU on the training boxes: the floor for
any model that ignores the image) and ``<method>_shuffled`` (the method answering about another
image: if it barely drops, its answers do not come from the image). ``method=incontext`` adds
``incontext_<k>`` rows (mean/std over context draws) instead. The model sees each image squashed
to a square (224x224, the frame the box text lives in, or the encoder's larger input:
:func:`pin.frame.model_side`); boxes are scored in the 224 frame and the predictions
file keeps them there (``pred_box``, ``gt_box``; ``gt_box_orig`` is in the original pixels).

Under ``accelerate launch`` (``state``: accelerate's PartialState) process i answers batches i,
i+N, ... - the batches one process would run - and the main process gathers the answers back in
order and writes every file, identical to one process's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pin.progress import tqdm

from pin.boxes import BoxCodec
from pin.errors import PinError
from pin.eval import baselines, metrics
from pin.eval.datasets import load_queries
from pin.eval.query import Query
from pin.frame import FRAME, model_side
from pin.methods.base import Method
from pin.viz.gallery import gallery, size_bucket_bars
from pin.vlm.base import FrozenVLM


@torch.no_grad()
def query_features(vlm: FrozenVLM, queries: list[Query], batch_size: int
                   ) -> tuple[torch.Tensor, list[int], list[Path]]:
    """Patch features per distinct image (an image with 3 objects is encoded once).

    Returns (features, the feature row of each query, the images that could not be decoded); a
    query whose image cannot be decoded (truncated, corrupt) gets row -1."""
    firsts: dict[object, Query] = {}  # insertion-ordered
    for q in queries:
        firsts.setdefault((q.image_path, q.image_id), q)
    distinct = list(firsts.items())
    order: dict[object, int] = {}
    unreadable: list[Path] = []
    chunks = []
    side = model_side(vlm.input_size)
    for start in tqdm(range(0, len(distinct), batch_size), desc="encode images", unit="batch", leave=False):
        ims = []
        for key, q in distinct[start:start + batch_size]:
            try:
                ims.append(q.load_image().resize((side, side)))
            except PinError:
                unreadable.append(q.image_path)
                continue
            order[key] = len(order)
        if ims:
            chunks.append(vlm.patch_features(vlm.preprocess(ims)).float().cpu())
    feats = torch.cat(chunks) if chunks else torch.empty(0)
    return feats, [order.get((q.image_path, q.image_id), -1) for q in queries], unreadable


def drop_unreadable(dataset: str, queries: list[Query], rows: list[int], unreadable: list[Path],
                    stats: dict, max_missing: float) -> tuple[list[Query], list[int]]:
    """Skip the queries of images that cannot be decoded (counted in ``n_unreadable_images``);
    more than ``eval.max_missing`` of the images unreadable is an error naming the first."""
    stats["n_unreadable_images"] = len(unreadable)
    if not unreadable:
        return queries, rows
    n_images = len({(q.image_path, q.image_id) for q in queries})
    if len(unreadable) > max_missing * n_images:
        raise PinError(f"{unreadable[0]}: {len(unreadable)} of {n_images} {dataset} images cannot be decoded "
                       f"(truncated or corrupt; eval.max_missing={max_missing:g})")
    keep = [i for i, r in enumerate(rows) if r >= 0]
    if not keep:
        raise PinError(f"{unreadable[0]}: none of the {n_images} selected {dataset} images can be decoded")
    queries, rows = [queries[i] for i in keep], [rows[i] for i in keep]
    print(f"[evaluate@{dataset}] warning: skipped {len(unreadable)} unreadable {dataset} images, e.g. {unreadable[0]}")
    stats["n_queries"] = len(queries)
    stats["n_images"] = len({q.image_id for q in queries})
    return queries, rows


@torch.no_grad()
def answer(vlm: FrozenVLM, feats: torch.Tensor, rows: list[int], texts: list[str], conditioning: dict,
           max_new_tokens: int, batch_size: int, num_beams: int, desc: str, state=None) -> list[str]:
    """Answers (greedy, or beam search with ``num_beams`` > 1); ``conditioning`` holds a method's extra inputs (``insert``, ``fusion_tokens``,
    ``lm_prefix``), empty for the raw VLM. ``state``: N processes share the batches (see the
    module docstring); every process gets all the answers."""
    world, rank = (state.num_processes, state.process_index) if state is not None else (1, 0)
    starts = range(0, len(texts), batch_size)
    mine: dict[int, list[str]] = {}
    for start in tqdm(starts[rank::world], desc=desc, unit="batch", leave=False, disable=rank > 0):
        idx = rows[start:start + batch_size]
        mine[start] = vlm.generate(feats[idx].to(vlm.device), [vlm.prompt(t) for t in texts[start:start + batch_size]],
                                   max_new_tokens=max_new_tokens, num_beams=num_beams, **conditioning)
    if world > 1:
        from accelerate.utils import gather_object

        for part in gather_object([mine]):
            mine.update(part)
    return [a for start in starts for a in mine[start]]


@torch.no_grad()
def method_inputs(vlm: FrozenVLM, method: Method, queries: list[Query], frozen_feats: torch.Tensor,
                  batch_size: int) -> tuple[torch.Tensor, dict]:
    """The features the method's VLM sees (re-encoded if the method changes the encoder) and its
    conditioning, computed once."""
    method.eval()
    conditioning = {k: v.detach() for k, v in method.conditioning().items()}
    if not method.encodes_pixels:
        return frozen_feats, conditioning
    with method.vision(vlm):
        feats, _, _ = query_features(vlm, queries, batch_size)  # same rows as the frozen features
    return feats, conditioning


def iou_with_other_objects(queries: list[Query], preds: np.ndarray) -> tuple[float | None, float | None]:
    """On images with several objects: mean IoU of the answer with the queried object vs with the
    image's other objects. A model that localises *the named* object scores the first higher."""
    by_image: dict[object, list[int]] = {}
    for i, q in enumerate(queries):
        by_image.setdefault((q.image_path, q.image_id), []).append(i)
    own, other = [], []
    for idx in by_image.values():
        if len(idx) < 2:
            continue
        for i in idx:
            if np.isnan(preds[i]).any():
                own.append(0.0)
                other.append(0.0)
                continue
            own.append(float(metrics.iou(np.array([queries[i].gt_box_224]), preds[i:i + 1])[0]))
            others = np.array([queries[j].gt_box_224 for j in idx if j != i])
            other.append(float(metrics.iou(others, np.repeat(preds[i:i + 1], len(others), 0)).mean()))
    if not own:
        return None, None
    return float(np.mean(own)), float(np.mean(other))


def training_boxes(composed_dir: Path, limit: int = 20000) -> np.ndarray:
    from pin.composed import read_split_records

    boxes = []
    for im in read_split_records(composed_dir / "train", limit=limit):
        sx, sy = FRAME / im.width, FRAME / im.height
        boxes += [(o.box[0] * sx, o.box[1] * sy, o.box[2] * sx, o.box[3] * sy) for o in im.objects]
    return np.asarray(boxes, dtype=float)


def run_evaluate(dataset: str, eval_p, vlm: FrozenVLM, method: Method, grid: int,
                 composed_dir: str = "data/composed", metrics_dir: str = "metrics/eval",
                 plots_dir: str = "metrics/plots", predictions_dir: str = "data/predictions",
                 state=None) -> str:
    queries, stats = load_queries(dataset, eval_p)
    codec = BoxCodec(grid)
    max_new = codec.max_answer_chars + 2
    feats, rows, unreadable = query_features(vlm, queries, eval_p.batch_size)
    queries, rows = drop_unreadable(dataset, queries, rows, unreadable, stats, eval_p.max_missing)
    texts = [q.text for q in queries]
    unknown = vlm.vocabulary_warning(texts)  # one summary for the dataset, not one per query
    if unknown:
        print(f"[evaluate] warning: {dataset}: {unknown}")
    gt = np.array([q.gt_box_224 for q in queries], dtype=float)
    image_ids = [q.image_id for q in queries]

    def parse(answers: list[str]) -> np.ndarray:
        return metrics.as_boxes([codec.parse(a) for a in answers])

    results: dict[str, dict] = {}
    rows_out: list[dict] = []
    answers: dict[str, list[str]] = {}
    preds: dict[str, np.ndarray] = {}
    runs = [("raw", feats, {}, rows)]
    if method.trains:
        m_feats, conditioning = method_inputs(vlm, method, queries, feats, eval_p.batch_size)
        runs = [(method.name, m_feats, conditioning, rows), *runs,
                (f"{method.name}_shuffled", m_feats, conditioning, _shuffled(rows, eval_p.seed))]
    for name, run_feats, conditioning, feat_rows in runs:
        answers[name] = answer(vlm, run_feats, feat_rows, texts, conditioning, max_new, eval_p.batch_size,
                               eval_p.num_beams, desc=name, state=state)
        preds[name] = parse(answers[name])
        results[name] = metrics.score(gt, preds[name], image_ids)
    if method.trains:
        own, other = iou_with_other_objects(queries, preds[method.name])
        results[method.name]["iou_own_multi"], results[method.name]["iou_other_multi"] = own, other
    for name in results:  # raw included: its answers must not follow the object either
        results[name]["centre_x_corr"], results[name]["centre_y_corr"] = metrics.centre_correlation(gt, preds[name])
    if method.name == "incontext":
        _add_incontext(results, preds, answers, vlm, method, feats, rows, texts, gt, image_ids, codec, parse,
                       Path(composed_dir), eval_p, max_new)

    train_boxes = training_boxes(Path(composed_dir))
    results["random"], preds["random"] = baselines.random_baseline(gt, train_boxes, eval_p.random_draws,
                                                                   eval_p.seed, image_ids)
    results["constant"], box = baselines.constant_baseline(gt, train_boxes, grid, eval_p.seed, image_ids)
    preds["constant"] = np.repeat(box[None], len(gt), axis=0)

    if state is not None and not state.is_main_process:
        return f"process {state.process_index}: answers handed to the main process"
    for name, p in preds.items():
        rows_out += metrics.prediction_rows(queries, name, p, answers.get(name))
    metrics.write_predictions(str(Path(predictions_dir) / f"{dataset}.parquet"), rows_out)
    metrics.write_metrics(str(Path(metrics_dir) / f"{dataset}.json"), results, {**stats})
    if eval_p.gallery_size:
        show = preds[_gallery_row(method, preds)]
        gallery(queries, list(show), Path(plots_dir) / f"{dataset}_gallery.png", n=eval_p.gallery_size)
    size_bucket_bars(results, Path(plots_dir) / f"{dataset}_miou_by_size.png", title=dataset)
    summary = ", ".join(f"{m} {r['miou']:.3f}" for m, r in results.items() if r.get("miou") is not None)
    return f"{len(queries)} queries on {stats.get('n_images', '?')} images; mIoU {summary}"


def _gallery_row(method: Method, preds: dict) -> str:
    """The row the gallery pictures: the trained method, the most-shot in-context row, else the constant box."""
    if method.name in preds:
        return method.name
    shots = sorted((int(m.rsplit("_", 1)[1]) for m in preds if m.startswith("incontext_")), reverse=True)
    return f"incontext_{shots[0]}" if shots else "constant"


def _add_incontext(results, preds, answers, vlm, method, feats, rows, texts, gt, image_ids, codec, parse,
                   composed_dir: Path, eval_p, max_new: int) -> None:
    """``incontext_<k>`` rows (mean/std over the context draws); the predictions file keeps the
    first draw's answers."""
    from pin.composed import read_split_records
    from pin.eval.incontext import incontext_metrics, run_incontext

    pool = read_split_records(composed_dir / "train")
    by_k = run_incontext(vlm, feats, rows, texts, pool, codec, method.shots, method.repeats, eval_p.seed,
                         max_new, eval_p.batch_size, eval_p.num_beams)
    rows_k, first = incontext_metrics(by_k, gt, image_ids, parse)
    results.update(rows_k)
    answers.update(first)
    preds.update({name: parse(a) for name, a in first.items()})


def _shuffled(rows: list[int], seed: int) -> list[int]:
    """Each query paired with a different image's features (a derangement where possible)."""
    n_images = max(rows) + 1 if rows else 0
    if n_images < 2:
        return rows
    shift = np.random.default_rng(seed).integers(1, n_images)
    return [int((r + shift) % n_images) for r in rows]
