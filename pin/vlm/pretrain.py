"""Pretraining the offline mini VLM with image-level supervision only.

Recognition first (the recipe that worked in the mini-VLM experiments):
1. vision: the open_clip ViT alone, multi-label BCE over categories; each patch token gets a
   linear class score and the image score is the max over patches (multiple-instance learning:
   the label says *what* is in the image, never *where*).
2. language: the ViT frozen, its patch features cached; perceiver + gated cross-attention + LM
   trained on the texts of :mod:`pin.vlm.pretrain_text` (captions, yes/no, counting, answer-slot
   text with sizes) - no text carries a position.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, fields

import numpy as np
import torch
from pin.progress import tqdm

from pin.categories import query_name
from pin.composed import ComposedImage
from pin.errors import PinError
from pin.frame import FRAME
from pin.vlm.base import resolve_device
from pin.vlm.pretrain_text import ObjectFact, PretrainText, TextRecipe, make_text, slot_style
from pin.vlm.pretrain_vision import (VisionResult, level_hot, multi_hot, normalise,  # noqa: F401 - re-exported
                                    pretrain_vision)


def facts_of(image: ComposedImage, relations: bool = False) -> list[ObjectFact]:
    """Only names and sizes cross into pretraining; positions are dropped here, structurally,
    unless ``relations`` (the relation kind compares two centres; no text states one)."""
    out = []
    for o in image.objects:
        x1, y1, x2, y2 = o.box
        sx, sy = FRAME / image.width, FRAME / image.height
        centre = ((x1 + x2) / 2 * sx, (y1 + y2) / 2 * sy) if relations else None
        out.append(ObjectFact(query_name(o.category), round((x2 - x1) * sx), round((y2 - y1) * sy), centre,
                              levels=tuple(o.appearance)))
    return out


def pixels_uint8(processor_size: int, images: list[ComposedImage]) -> torch.Tensor:
    """All images resized once to the encoder's input size, stored as uint8 (N, 3, S, S)."""
    from PIL import Image

    arr = np.stack([np.asarray(im.pil().resize((processor_size, processor_size), Image.BICUBIC)) for im in
                    tqdm(images, desc="decode", unit="img", leave=False)])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


@dataclass
class LanguageResult:
    steps: int
    seconds: float
    final_loss: float


class TextBatches(torch.utils.data.IterableDataset):
    """Step ``s``'s batch is a pure function of (seed, s): image rows, then their tokenised texts.

    With DataLoader workers, worker ``k`` of ``n`` makes the steps ``k, k+n, ...`` and the loader
    hands them out in step order, so any number of workers gives the same batches."""

    def __init__(self, adapter, facts, vocabulary, recipe: TextRecipe, *, steps: int, batch_size: int, seed: int):
        self.tokenize = adapter.teacher_forcing  # picklable: no model inside
        self.facts, self.vocabulary, self.recipe = facts, vocabulary, recipe
        self.steps, self.batch_size, self.seed = steps, batch_size, seed

    def batch(self, step: int):
        rng = random.Random(self.seed * 1_000_003 + step)
        idx = [rng.randrange(len(self.facts)) for _ in range(self.batch_size)]
        texts = [make_text(self.facts[i], self.vocabulary, rng, recipe=self.recipe) for i in idx]
        ids, mask, labels = self.tokenize([t.prompt for t in texts], [t.answer for t in texts])
        return torch.tensor(idx), ids, mask, labels

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        k, n = (info.id, info.num_workers) if info else (0, 1)
        for step in range(k, self.steps, n):
            yield self.batch(step)


def features_of(adapter, u8: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """The frozen ViT's patch features of uint8 images, ``batch`` images at a time."""
    chunks = [u8[i:i + batch] for i in range(0, len(u8), batch)] or [u8]  # no images: an empty batch
    with torch.no_grad():
        return torch.cat([adapter.patch_features(normalise(c.to(adapter.device))) for c in chunks])


def pretrain_language(adapter, flamingo, features: torch.Tensor, facts: list[list[ObjectFact]], vocabulary: list[str],
                      *, steps: int, lr: float, batch_size: int, seed: int, recipe: TextRecipe = TextRecipe(),
                      workers: int = 0, train: tuple[str, ...] = ("perceiver", "xattn", "lm")) -> LanguageResult:
    """``train``: the parameter groups that learn (:func:`pin.vlm.mini.trainable_for_pretraining`);
    the rest stay as they are - e.g. ``("lm",)`` with closed gates is a text-only language model,
    and ``("perceiver", "xattn")`` then teaches it to see while it stays frozen (Flamingo's recipe)."""
    from pin.vlm.mini import trainable_for_pretraining
    from pin.vlm.openflamingo import masked_answer_loss

    groups = trainable_for_pretraining(flamingo)
    unknown = sorted(set(train) - {"perceiver", "xattn", "lm"})
    if unknown or not train:
        raise ValueError(f"train: groups among perceiver, xattn, lm, got {train}")
    params = [p for name in ("perceiver", "xattn", "lm") if name in train for p in groups[name]]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.05)
    batches = TextBatches(adapter, facts, vocabulary, recipe, steps=steps, batch_size=batch_size, seed=seed)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, num_workers=workers,
                                         pin_memory=adapter.device.type == "cuda",
                                         persistent_workers=False, prefetch_factor=8 if workers else None)
    dev = adapter.device
    t0, ema = time.perf_counter(), None
    bar = tqdm(loader, total=steps, desc="pretrain language", unit="step")
    for step, (idx, ids, mask, labels) in enumerate(bar):
        ids, mask, labels = (t.to(dev, non_blocking=True) for t in (ids, mask, labels))
        loss = masked_answer_loss(adapter.logits(features[idx.to(features.device)], ids, mask), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 10 == 0 or step == steps - 1:  # a host sync every 10th step only
            value = float(loss.detach())
            ema = value if ema is None else 0.8 * ema + 0.2 * value
            bar.set_postfix(loss=f"{ema:.4f}")
    for p in params:
        p.requires_grad_(False)
    return LanguageResult(steps, time.perf_counter() - t0, ema or float("nan"))


def recognition_report(adapter, features: torch.Tensor, facts: list[list[ObjectFact]], vocabulary: list[str],
                       seed: int = 0, batch_size: int = 64, recipe: TextRecipe = TextRecipe()) -> dict:
    """Caption object precision/recall and QA accuracy of the (frozen) mini VLM."""
    rng = random.Random(seed)
    tp = fp = fn = 0
    qa: dict[str, list[bool]] = {"exists": [], "count": [], "slot_size": []}
    if recipe.slot == "appearance":  # the readout PIN must move: x1, y1 = cell * the named object's levels
        qa.update(slot_corner_single=[], slot_corner_multi=[])
    vocab_sorted = sorted(vocabulary, key=len, reverse=True)
    for start in range(0, len(facts), batch_size):
        sl = slice(start, start + batch_size)
        feats, batch = features[sl], facts[sl]
        caps = adapter.generate(feats, ["<image>A photo of"] * len(batch), max_new_tokens=24)
        for cap, objs in zip(caps, batch):
            said = set(_names_in(cap, vocab_sorted))
            truth = {o.name for o in objs}
            tp += len(said & truth)
            fp += len(said - truth)
            fn += len(truth - said)
        for kind in ("exists", "count", "slot"):
            texts: list[PretrainText] = [make_text(objs, vocabulary, rng, kind, recipe) for objs in batch]
            outs = adapter.generate(feats, [t.prompt for t in texts], max_new_tokens=20)
            key = "slot_size" if kind == "slot" else kind
            for t, out, objs in zip(texts, outs, batch):
                if kind == "slot":  # the named object's size: x2 - x1 and y2 - y1 of the slot box
                    want = _slot_size(t.answer, recipe.slot)
                    qa[key].append(want is not None and _slot_size(out, recipe.slot) == want)
                    if recipe.slot == "appearance":
                        corner = _slot_corner(out)
                        qa["slot_corner_multi" if len(objs) > 1 else "slot_corner_single"].append(
                            corner is not None and corner == _slot_corner(t.answer))
                else:
                    qa[key].append(out.strip() == t.answer.strip())
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    return {"caption_precision": round(precision, 4), "caption_recall": round(recall, 4),
            **{f"qa_{k}": round(float(np.mean(v)), 4) if v else None for k, v in qa.items()},
            "n_images": len(facts)}


def _slot_size(text: str, slot: str = "appearance") -> tuple[float, float] | None:
    """Width and height of a slot answer, read by the evaluation's own strict box parser (a style
    that is not a box, ``SlotStyle.box`` false, gives the size as its first two numbers)."""
    from pin.boxes import BoxCodec

    if not slot_style(slot).box:
        import re

        nums = re.findall(r"\d+", text)
        return (float(nums[0]), float(nums[1])) if len(nums) >= 2 else None
    box = BoxCodec(grid=8).parse(text)  # parse reads frame coordinates; the grid plays no part
    return None if box is None else (box[2] - box[0], box[3] - box[1])


def _slot_corner(text: str) -> tuple[float, float] | None:
    from pin.boxes import BoxCodec

    box = BoxCodec(grid=8).parse(text)
    return None if box is None else (box[0], box[1])


def _names_in(caption: str, vocab_sorted: list[str]) -> list[str]:
    text = " " + caption.lower().replace(",", " ").replace(".", " ") + " "
    found = []
    for name in vocab_sorted:  # longest first so "teddy bear" is not read as "bear"
        key = f" {name} "
        if key in text:
            found.append(name)
            text = text.replace(key, " | ")
    return found


def category_vocabulary(images: list[ComposedImage]) -> list[str]:
    return sorted({query_name(o.category) for im in images for o in im.objects})


def text_recipe(p, grid: int = 8, frame: int = FRAME) -> TextRecipe:
    try:
        return TextRecipe(mix=tuple(p.text_mix.items()), slot=p.slot, frame=frame, cell=frame // grid)
    except ValueError as err:  # pretrain_text knows its own text kinds; the message names the key
        raise PinError(f"pretrain.text_mix: {err}") from None


def _finite(x: float | None) -> float | None:
    return None if x is None or x != x else round(x, 4)  # NaN is not JSON


def keep_vision(flamingo, config, source: str) -> float:
    """Copy the ViT of the mini VLM saved at ``source`` into ``flamingo`` (its vision sizes must
    match): the language side is then pretrained from scratch on a tower that already sees."""
    from pin.vlm.mini import load_mini_parts, read_mini_config

    donor, _, _, donor_config = load_mini_parts(source)
    vision_keys = [f.name for f in fields(config) if f.name.startswith(("image_size", "patch", "vision", "stem"))]
    differ = [k for k in vision_keys if getattr(config, k) != getattr(donor_config, k)]
    if differ:
        raise PinError(f"pretrain.vision_from: {source} has another vision tower ({', '.join(differ)} differ)")
    flamingo.vision_encoder.load_state_dict(donor.vision_encoder.state_dict())
    meta = read_mini_config(source).get("meta", {})
    return float(meta.get("pretrain_metrics", {}).get("vision", {}).get("heldout_map", float("nan")))


def pretrain_mini(p, images, probe, out_dir: str, metrics_path: str, *, grid: int = 8, workers: int = 0,
                  pixels: tuple[torch.Tensor, torch.Tensor] | None = None, timing_path: str | None = None) -> str:
    """Pretrain a fresh mini VLM on ``images`` and report its recognition on ``probe``.

    ``pixels``: the (images, probe) uint8 tensors at ``p.image_size`` if already decoded. The
    seconds each part took go to ``timing_path`` (when given) and the summary, never into the
    model's files or the metrics: those must be the same bytes on every run."""
    from pin.io import atomic_write_json, record_timing
    from pin.vlm.mini import MiniVLMConfig, build_mini_flamingo, count_parameters, save_mini
    from pin.vlm.openflamingo import OpenFlamingoAdapter
    from pin.vlm.pretrain_text import words_of

    torch.manual_seed(p.seed)
    device = resolve_device(p.device, key="pretrain.device")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    vocabulary = sorted(set(category_vocabulary(images)) | set(category_vocabulary(probe)))
    missing = sorted(set(vocabulary) - set(category_vocabulary(images)))
    if missing:  # only with a shrunken pretrain split (tests); the default covers every category
        print(f"[pretrain_vlm] warning: {len(missing)} categories never appear in the pretrain split, "
              f"e.g. {missing[:3]}")
    config = MiniVLMConfig(image_size=p.image_size, patch_size=p.patch, vision_width=p.vision_width,
                           vision_layers=p.vision_layers, lm_width=p.lm_width, lm_layers=p.lm_layers, stem=p.stem,
                           gate_init=p.gate_init, xattn_every=p.xattn_every, perceiver_latents=p.latents)
    flamingo, processor, tokenizer = build_mini_flamingo(config, words_of(vocabulary),
                                                         whole_numbers=p.numbers == "whole")
    donor_map = keep_vision(flamingo, config, p.vision_from) if p.vision_from else None
    flamingo.to(device)

    u8, probe_u8 = pixels if pixels is not None else (pixels_uint8(p.image_size, images),
                                                       pixels_uint8(p.image_size, probe))
    labels, probe_labels, groups = _vision_labels(p, images, probe, vocabulary, grid)
    if p.vision_from:  # the donor's tower and its measured mAP
        vis = VisionResult(0, 0.0, float("nan"), donor_map)
    else:
        vis = pretrain_vision(flamingo, u8, labels, steps=p.vision_steps, lr=p.vision_lr, batch_size=p.batch_size,
                              seed=p.seed, eval_u8=probe_u8, eval_labels=probe_labels, groups=groups)

    adapter = OpenFlamingoAdapter(flamingo, processor, tokenizer, name="mini")  # freezes everything
    feats, probe_feats = features_of(adapter, u8), features_of(adapter, probe_u8)
    facts = [facts_of(im, relations=p.text_mix.get("relation", 0) > 0) for im in images]
    recipe = text_recipe(p, grid)
    lang = pretrain_language(adapter, flamingo, feats, facts, vocabulary, steps=p.lm_steps, lr=p.lm_lr,
                             batch_size=p.lm_batch_size or p.batch_size, seed=p.seed, recipe=recipe, workers=workers)
    flamingo.eval()
    report = recognition_report(adapter, probe_feats, [facts_of(im) for im in probe], vocabulary, seed=p.seed,
                                recipe=recipe)
    flamingo.to("cpu")
    metrics = _pretrain_metrics(p, device, vis, lang, report, count_parameters(flamingo), len(images),
                                len(vocabulary))
    meta = {"vocabulary": vocabulary, "pretrain_images": len(images), "pretrain_metrics": metrics}
    save_mini(out_dir, flamingo, tokenizer, config, meta=meta)
    atomic_write_json(metrics_path, metrics)
    if timing_path is not None:
        record_timing(timing_path, "pretrain_vlm", {"vision_seconds": round(vis.seconds, 1),
                                                   "language_seconds": round(lang.seconds, 1)})
    return (f"{count_parameters(flamingo):,} params; vision mAP {vis.map:.3f}; captions P/R "
            f"{report['caption_precision']:.2f}/{report['caption_recall']:.2f}; yes/no {report['qa_exists']}; "
            f"vision {vis.seconds:.0f}s, language {lang.seconds:.0f}s")


def _vision_labels(p, images, probe, vocabulary: list[str], grid: int):
    """The vision tower's targets for the pretrain and probe images - each image's categories,
    plus its objects' grid levels with ``p.vision_levels`` - and the sizes of their groups."""
    index = {name: i for i, name in enumerate(vocabulary)}
    labels = multi_hot(images, index)
    probe_labels = multi_hot(probe, index)
    groups = (labels.shape[1],)
    if p.vision_levels:
        labels = torch.cat([labels, level_hot(images, grid)], 1)
        probe_labels = torch.cat([probe_labels, level_hot(probe, grid)], 1)
        groups = (groups[0], grid, grid)
    return labels, probe_labels, groups


def _pretrain_metrics(p, device: torch.device, vis, lang, report: dict, n_parameters: int, n_images: int,
                      n_categories: int) -> dict:
    """What :func:`pretrain_mini` writes to its metrics file and the model's meta: no timings,
    so every run writes the same bytes."""
    return {
        "source": "train",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "vision": {"steps": vis.steps, "final_loss": _finite(vis.final_loss), "heldout_map": _finite(vis.map),
                   **({"heldout_level_map": _finite(vis.level_map)} if p.vision_levels else {}),
                   **({"kept_from": p.vision_from} if p.vision_from else {})},
        "language": {"steps": lang.steps, "final_loss": round(lang.final_loss, 4)},
        "recognition_heldout": report,
        "n_parameters": n_parameters,
        "n_images": n_images,
        "n_categories": n_categories,
        "recipe": {"slot": p.slot, "text_mix": dict(p.text_mix), "xattn_every": p.xattn_every,
                   "latents": p.latents, "numbers": p.numbers, "vision_from": p.vision_from,
                   "vision_levels": p.vision_levels},
    }
