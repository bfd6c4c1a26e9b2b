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
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from pin.categories import readable
from pin.composed import ComposedImage
from pin.vlm.pretrain_text import ObjectFact, PretrainText, make_text



def facts_of(image: ComposedImage) -> list[ObjectFact]:
    """Only names and sizes cross into pretraining; positions are dropped here, structurally."""
    out = []
    for o in image.objects:
        x1, y1, x2, y2 = o.box
        sx, sy = 224 / image.width, 224 / image.height
        out.append(ObjectFact(readable(o.category), round((x2 - x1) * sx), round((y2 - y1) * sy)))
    return out


def pixels_uint8(processor_size: int, images: list[ComposedImage]) -> torch.Tensor:
    """All images resized once to the encoder's input size, stored as uint8 (N, 3, S, S)."""
    from PIL import Image

    arr = np.stack([np.asarray(im.pil().resize((processor_size, processor_size), Image.BICUBIC)) for im in
                    tqdm(images, desc="decode", unit="img", leave=False)])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def normalise(u8: torch.Tensor) -> torch.Tensor:
    return (u8.float() / 255 - CLIP_MEAN) / CLIP_STD


@dataclass
class VisionResult:
    steps: int
    seconds: float
    final_loss: float
    map: float  # mean average precision over classes on held-back images


def pretrain_vision(flamingo, u8: torch.Tensor, labels: torch.Tensor, *, steps: int, lr: float, batch_size: int,
                    seed: int, eval_u8: torch.Tensor | None = None, eval_labels: torch.Tensor | None = None
                    ) -> VisionResult:
    visual = flamingo.vision_encoder
    with torch.no_grad():
        width = visual(normalise(u8[:1]))[1].shape[-1]
    head = torch.nn.Linear(width, labels.shape[1])
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
        x = normalise(u8[idx])
        if torch.rand((), generator=gen) < 0.5:  # flips keep labels valid and carry no position
            x = x.flip(-1)
        tokens = visual(x)[1]
        logits = head(tokens).amax(dim=1)
        # Softmax over classes against the normalised multi-hot label (Mahajan et al. 2018): with
        # hundreds of classes and ~2 positives per image, per-class BCE sits at the base rate
        # for hundreds of steps; this learns from the first.
        target = labels[idx] / labels[idx].sum(1, keepdim=True).clamp_min(1)
        loss = -(target * logits.log_softmax(-1)).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        value = float(loss.detach())
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        bar.set_postfix(loss=f"{ema:.4f}")
    visual.eval()
    mean_ap = float("nan")
    if eval_u8 is not None and len(eval_u8):
        with torch.no_grad():
            scores = torch.cat([head(visual(normalise(eval_u8[i:i + 256]))[1]).amax(1)
                                for i in range(0, len(eval_u8), 256)])
        mean_ap = mean_average_precision(scores.numpy(), eval_labels.numpy())
    return VisionResult(steps, time.perf_counter() - t0, ema or float("nan"), mean_ap)


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


@dataclass
class LanguageResult:
    steps: int
    seconds: float
    final_loss: float


def pretrain_language(adapter, flamingo, features: torch.Tensor, facts: list[list[ObjectFact]], vocabulary: list[str],
                      *, steps: int, lr: float, batch_size: int, seed: int) -> LanguageResult:
    from pin.vlm.mini import trainable_for_pretraining

    groups = trainable_for_pretraining(flamingo)
    params = groups["perceiver"] + groups["xattn"] + groups["lm"]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.05)
    t0, ema = time.perf_counter(), None
    bar = tqdm(range(steps), desc="pretrain language", unit="step")
    for step in bar:
        rng = random.Random(seed * 1_000_003 + step)
        idx = [rng.randrange(len(facts)) for _ in range(batch_size)]
        texts = [make_text(facts[i], vocabulary, rng) for i in idx]
        loss = adapter.answer_loss(features[idx], [t.prompt for t in texts], [t.answer for t in texts])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        value = float(loss.detach())
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        bar.set_postfix(loss=f"{ema:.4f}")
    for p in params:
        p.requires_grad_(False)
    return LanguageResult(steps, time.perf_counter() - t0, ema or float("nan"))


def recognition_report(adapter, features: torch.Tensor, facts: list[list[ObjectFact]], vocabulary: list[str],
                       seed: int = 0, batch_size: int = 64) -> dict:
    """Caption object precision/recall and QA accuracy of the (frozen) mini VLM."""
    rng = random.Random(seed)
    tp = fp = fn = 0
    qa: dict[str, list[bool]] = {"exists": [], "count": [], "slot_size": []}
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
            texts: list[PretrainText] = [make_text(objs, vocabulary, rng, kind) for objs in batch]
            outs = adapter.generate(feats, [t.prompt for t in texts], max_new_tokens=20)
            key = "slot_size" if kind == "slot" else kind
            for t, out in zip(texts, outs):
                if kind == "slot":  # the named object's size box " [0,0,w,h]"
                    qa[key].append(out.strip() == t.answer.strip())
                else:
                    qa[key].append(out.strip() == t.answer.strip())
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    return {"caption_precision": round(precision, 4), "caption_recall": round(recall, 4),
            **{f"qa_{k}": round(float(np.mean(v)), 4) if v else None for k, v in qa.items()},
            "n_images": len(facts)}


def _names_in(caption: str, vocab_sorted: list[str]) -> list[str]:
    text = " " + caption.lower().replace(",", " ").replace(".", " ") + " "
    found = []
    for name in vocab_sorted:  # longest first so "teddy bear" is not read as "bear"
        key = f" {name} "
        if key in text:
            found.append(name)
            text = text.replace(key, " | ")
    return found


def multi_hot(images: list[ComposedImage], index: dict[str, int]) -> torch.Tensor:
    """Image-level labels (N, classes): which categories an image holds, not where."""
    labels = torch.zeros(len(images), len(index))
    for row, im in enumerate(images):
        for o in im.objects:
            labels[row, index[readable(o.category)]] = 1
    return labels


def category_vocabulary(images: list[ComposedImage]) -> list[str]:
    return sorted({readable(o.category) for im in images for o in im.objects})


def run_pretrain(p, composed_dir: str = "data/composed", out_dir: str = "models/mini_vlm",
                 metrics_path: str = "metrics/pretrain.json") -> str:
    """The pretrain_vlm stage: build, pretrain (vision, then language) and save the mini VLM."""
    from pathlib import Path

    from pin.composed import read_split
    from pin.io import atomic_write_json
    from pin.vlm.mini import MiniVLMConfig, build_mini_flamingo, count_parameters, save_mini
    from pin.vlm.openflamingo import OpenFlamingoAdapter
    from pin.vlm.pretrain_text import words_of

    torch.manual_seed(p.seed)
    images = read_split(Path(composed_dir) / "pretrain", limit=p.max_images)
    probe = read_split(Path(composed_dir) / "heldout", limit=256)  # unseen images, held-out names
    vocabulary = sorted(set(category_vocabulary(images)) | set(category_vocabulary(probe)))
    missing = sorted(set(vocabulary) - set(category_vocabulary(images)))
    if missing:  # only with a shrunken pretrain split (tests); the default covers every category
        print(f"[pretrain_vlm] warning: {len(missing)} categories never appear in the pretrain split, "
              f"e.g. {missing[:3]}")
    config = MiniVLMConfig(image_size=p.image_size, patch_size=p.patch, vision_width=p.vision_width,
                           vision_layers=p.vision_layers, lm_width=p.lm_width, lm_layers=p.lm_layers, stem=p.stem,
                           gate_init=p.gate_init)
    flamingo, processor, tokenizer = build_mini_flamingo(config, words_of(vocabulary))

    u8 = pixels_uint8(p.image_size, images)
    index = {name: i for i, name in enumerate(vocabulary)}
    labels = multi_hot(images, index)
    probe_u8 = pixels_uint8(p.image_size, probe)
    probe_labels = multi_hot(probe, index)
    vis = pretrain_vision(flamingo, u8, labels, steps=p.vision_steps, lr=p.vision_lr, batch_size=p.batch_size,
                          seed=p.seed, eval_u8=probe_u8, eval_labels=probe_labels)

    adapter = OpenFlamingoAdapter(flamingo, processor, tokenizer, name="mini")  # freezes everything
    with torch.no_grad():
        feats = torch.cat([adapter.patch_features(normalise(u8[i:i + 256])) for i in range(0, len(u8), 256)])
        probe_feats = adapter.patch_features(normalise(probe_u8))
    facts = [facts_of(im) for im in images]
    lang = pretrain_language(adapter, flamingo, feats, facts, vocabulary, steps=p.lm_steps, lr=p.lm_lr,
                             batch_size=p.batch_size, seed=p.seed)
    flamingo.eval()
    report = recognition_report(adapter, probe_feats, [facts_of(im) for im in probe], vocabulary, seed=p.seed)
    meta = {"vocabulary": vocabulary, "pretrain_images": len(images)}
    save_mini(out_dir, flamingo, tokenizer, config, meta=meta)
    metrics = {
        "vision": {"steps": vis.steps, "seconds": round(vis.seconds, 1), "final_loss": round(vis.final_loss, 4),
                   "heldout_map": round(vis.map, 4)},
        "language": {"steps": lang.steps, "seconds": round(lang.seconds, 1), "final_loss": round(lang.final_loss, 4)},
        "recognition_heldout": report,
        "n_parameters": count_parameters(flamingo),
        "n_images": len(images),
        "n_categories": len(vocabulary),
    }
    atomic_write_json(metrics_path, metrics)
    return (f"{count_parameters(flamingo):,} params; vision mAP {vis.map:.3f}; captions P/R "
            f"{report['caption_precision']:.2f}/{report['caption_recall']:.2f}; yes/no {report['qa_exists']}")
