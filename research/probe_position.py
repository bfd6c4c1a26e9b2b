"""Where does the mini VLM lose the object's position? Linear probes, no VLM training.

On single-object images (probes fit on the train split, scored on the held-out split, whose
categories the probe never saw) a ridge-regression classifier predicts the object's centre cell
on the 8x8 grid (64 classes) from:

  a1  one patch feature of the frozen ViT -> that patch's index (does a token know where it is?)
  a2  the mean of the object's own patch features -> the object's centre cell
  a3  the mean of all 64 patch features (what a permutation-invariant reader can see, linearly)
  a4  all 64 patch features concatenated (position explicit: an upper bound, not a fusion input)
  b   the perceiver latents (flattened) - without, and with an oracle additive code (the
      sinusoidal table of pin/insert.py at d = the vision width, rows scaled to the mean patch norm
      times --oracle-scale) added to the patches
  c   the LM's last hidden state at the "[" of the answer, i.e. the input position whose
      logits give x1's first digit (teacher-forced; the prompt names the object)

``--upper`` adds the upper-bound row: PIN and the gated cross-attention trained together (LM,
perceiver and ViT frozen), scored by greedy decoding on the held-out split.
``--slots`` trains PIN alone and logs the per-slot answer loss (x1, y1, x2, y2 tokens).

    python research/probe_position.py --vlm models/mini_vlm --composed data/composed
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from pin.boxes import BoxCodec, iou
from pin.composed import ComposedImage, read_split_records
from pin.insert import InsertConfig, PositionalInsert, sinusoid_table
from pin.train import compute_features, make_samples
from pin.vlm.mini import load_mini
from pin.vlm.of_text import IGNORE_INDEX

GRID = 8


# ---------------------------------------------------------------------------------------- data
def single(images: list[ComposedImage]) -> list[ComposedImage]:
    return [im for im in images if len(im.objects) == 1]


def centre_cell(obj, grid: int = GRID) -> int:
    x1, y1, x2, y2 = obj.grid_box
    cx, cy = min(int((x1 + x2) / 2), grid - 1), min(int((y1 + y2) / 2), grid - 1)
    return cy * grid + cx


def object_patch_mask(obj, grid: int = GRID) -> torch.Tensor:
    m = torch.zeros(grid, grid, dtype=torch.bool)
    x1, y1, x2, y2 = obj.grid_box
    m[y1:y2, x1:x2] = True  # patches are row-major: row y, column x
    return m.flatten()


# --------------------------------------------------------------------------------------- probe
def ridge_probe(xtr: torch.Tensor, ytr: torch.Tensor, xte: torch.Tensor, yte: torch.Tensor, n_classes: int,
                lambdas=(1e-1, 1.0, 10.0, 100.0, 1000.0, 1e4), seed: int = 0) -> dict:
    """Ridge regression onto one-hot labels, argmax; lambda chosen on a 20% fold of the train
    rows, refit on all of them. Returns test accuracy (cell, and its x column alone) and chance."""
    xtr, xte = xtr.double(), xte.double()
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    xtr = torch.cat([xtr, torch.ones(len(xtr), 1, dtype=xtr.dtype)], 1)
    xte = torch.cat([xte, torch.ones(len(xte), 1, dtype=xte.dtype)], 1)
    y = torch.nn.functional.one_hot(ytr, n_classes).double()

    def fit(x, t, lam):
        n, d = x.shape
        if d <= n:
            return torch.linalg.solve(x.T @ x + lam * torch.eye(d, dtype=x.dtype), x.T @ t)
        return x.T @ torch.linalg.solve(x @ x.T + lam * torch.eye(n, dtype=x.dtype), t)

    perm = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(xtr))
    a, b = perm[:cut], perm[cut:]
    best = max(lambdas, key=lambda lam: float(((xtr[b] @ fit(xtr[a], y[a], lam)).argmax(1) == ytr[b]).double().mean()))
    pred = (xte @ fit(xtr, y, best)).argmax(1)
    major = int(torch.bincount(ytr, minlength=n_classes).argmax())
    out = {"acc": float((pred == yte).double().mean()), "chance": float((yte == major).double().mean()),
           "lambda": best, "n_train": len(ytr), "n_test": len(yte)}
    if n_classes == GRID * GRID:
        out["acc_x"] = float((pred % GRID == yte % GRID).double().mean())
        out["chance_x"] = float((yte % GRID == int(torch.bincount(ytr % GRID).argmax())).double().mean())
        # the same features regressed onto the centre's column and row: test correlation
        t = torch.stack([ytr % GRID, ytr // GRID], 1).double()
        t_te = torch.stack([yte % GRID, yte // GRID], 1).double()
        lam = max(lambdas, key=lambda lam: -float(((xtr[b] @ fit(xtr[a], t[a], lam) - t[b]) ** 2).mean()))
        p = (xte @ fit(xtr, t, lam)).numpy()
        out["corr_x"], out["corr_y"] = (float(np.corrcoef(p[:, k], t_te[:, k].numpy())[0, 1]) for k in (0, 1))
    return out


# ---------------------------------------------------------------------------------- VLM pieces
def oracle_code(feats: torch.Tensor, scale: float, two_d: bool = False) -> torch.Tensor:
    """The sinusoidal table over the patch positions at d = width, each row scaled to
    ``scale`` x the mean patch-feature norm (a row of the raw table has norm sqrt(width / 2)).
    ``two_d``: half the width a table over the row, half over the column (instead of one 1D
    table over the row-major index, where the column is index mod 8: a period-8 sawtooth that the
    table's frequencies (at most 1 rad per position) cannot express linearly)."""
    n, width = feats.shape[1:]
    if two_d:
        g = int(round(n ** 0.5))
        half = sinusoid_table(g, width // 2)
        table = torch.cat([half.repeat_interleave(g, 0), half.repeat(g, 1)], 1)  # (row, column) halves
    else:
        table = sinusoid_table(n, width)
    return table / table.norm(dim=1, keepdim=True) * feats.norm(dim=-1).mean() * scale


@torch.no_grad()
def latents(vlm, feats: torch.Tensor, insert: torch.Tensor | None = None, bs: int = 256) -> torch.Tensor:
    return torch.cat([vlm.fuse(feats[i:i + bs], insert).flatten(1) for i in range(0, len(feats), bs)])


@torch.no_grad()
def answer_states(vlm, feats: torch.Tensor, names: list[str], answers: list[str], insert=None,
                  layer: int = -1, bs: int = 128) -> torch.Tensor:
    """LM hidden state (layer ``layer``) at the input position whose logits give x1's first digit."""
    lm = vlm.flamingo.lang_encoder
    out = []
    for i in range(0, len(feats), bs):
        ids, mask, labels = vlm.teacher_forcing_batch([vlm.prompt(n) for n in names[i:i + bs]], answers[i:i + bs])
        vis = vlm.fuse(feats[i:i + bs], insert)
        with vlm._conditioned(vis, keep_media_locations=False):
            h = lm(input_ids=ids, attention_mask=mask, position_ids=vlm._positions(mask),
                   output_hidden_states=True).hidden_states[layer]
        bracket = vlm.tokenizer.convert_tokens_to_ids("[")
        first = (labels != IGNORE_INDEX).int().argmax(1)  # first answer token: the space
        pos = first + 1
        assert bool((ids[torch.arange(len(ids)), pos] == bracket).all()), "answer must start with ' ['"
        out.append(h[torch.arange(len(ids)), pos])
    return torch.cat(out)


def slot_positions(vlm, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, L) slot index 0..3 of each answer digit token (x1, y1, x2, y2), -1 elsewhere; counted
    on the labels, so position t's logits (which predict token t + 1) are taken at t - 1."""
    comma = vlm.tokenizer.convert_tokens_to_ids(",")
    bracket = vlm.tokenizer.convert_tokens_to_ids("[")
    close = vlm.tokenizer.convert_tokens_to_ids("]")
    slot = torch.full_like(labels, -1)
    for r in range(len(labels)):
        k = -1
        for t in range(labels.shape[1]):
            tok = int(labels[r, t])
            if tok == bracket:
                k = 0
            elif tok == comma:
                k += 1
            elif tok == close:
                k = -1
            elif tok != IGNORE_INDEX and k >= 0:
                slot[r, t] = k
    return slot


def per_slot_loss(vlm, feats, names, answers, insert=None) -> list[float]:
    ids, mask, labels = vlm.teacher_forcing_batch([vlm.prompt(n) for n in names], answers)
    logits = vlm.logits(feats, ids, mask, insert)
    slot = slot_positions(vlm, ids, labels)[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2).float(), ids[:, 1:], reduction="none")
    return [float(nll[slot == k].mean()) for k in range(4)]


# --------------------------------------------------------------------------------- evaluation
def heldout_queries(images: list[ComposedImage], codec: BoxCodec):
    rows, names, gts, img_of = [], [], [], []
    for r, im in enumerate(images):
        for o in im.objects:
            rows.append(r)
            names.append(o.referral)
            gts.append(codec.to_frame(o.grid_box))
            img_of.append(r)
    return rows, names, np.array(gts, float), img_of


@torch.no_grad()
def decode_score(vlm, feats, images, insert=None, shuffle: bool = False, bs: int = 64) -> dict:
    codec = BoxCodec(GRID)
    rows, names, gt, img_of = heldout_queries(images, codec)
    if shuffle:
        perm = list(range(len(images)))
        random.Random(0).shuffle(perm)
        rows = [perm[r] for r in rows]
    ans = []
    for i in range(0, len(rows), bs):
        ans += vlm.generate(feats[rows[i:i + bs]], [vlm.prompt(n) for n in names[i:i + bs]], insert,
                            max_new_tokens=codec.max_answer_chars + 2)
    pred = np.array([codec.parse(a) or (np.nan,) * 4 for a in ans], float)
    ok = ~np.isnan(pred).any(1)
    ious = np.where(ok, iou(gt, np.nan_to_num(pred)), 0.0)
    own, other = [], []
    for i in range(len(rows)):
        peers = [j for j in range(len(rows)) if img_of[j] == img_of[i] and j != i]
        if peers:
            own.append(ious[i])
            other.append(float(np.mean(iou(gt[peers], np.repeat(np.nan_to_num(pred[i:i + 1]), len(peers), 0))))
                         if ok[i] else 0.0)
    cx_t, cx_p = (gt[ok, 0] + gt[ok, 2]) / 2, (pred[ok, 0] + pred[ok, 2]) / 2
    cy_t, cy_p = (gt[ok, 1] + gt[ok, 3]) / 2, (pred[ok, 1] + pred[ok, 3]) / 2

    def corr(t, q):
        return float(np.corrcoef(t, q)[0, 1]) if ok.sum() > 2 and q.std() > 0 else 0.0

    return {"miou": float(ious.mean()), "parse": float(ok.mean()), "own": float(np.mean(own)),
            "other": float(np.mean(other)), "cx_corr": corr(cx_t, cx_p), "cy_corr": corr(cy_t, cy_p),
            "distinct": int(len({tuple(p) for p in pred[ok]})), "n": len(rows)}


def train_insert_and(vlm, train_feats, train_images, *, steps: int, lr: float, xattn_lr: float | None,
                     batch_size: int = 64, seed: int = 0, log_slots_every: int = 0, slot_probe=None,
                     also: tuple[str, ...] = ("xattn",), insert_config: InsertConfig | None = None) -> tuple:
    """PIN (plus the VLM parts named in ``also`` - groups of ``trainable_for_pretraining`` - at
    ``xattn_lr`` when it is set) on the answer loss; the rest frozen."""
    from pin.vlm.mini import trainable_for_pretraining

    torch.manual_seed(seed)
    insert = PositionalInsert(insert_config or InsertConfig.for_site(vlm.site))
    groups = [{"params": list(insert.parameters()), "lr": lr}]
    parts = trainable_for_pretraining(vlm.flamingo)
    xattn = [p for g in also for p in parts[g]] if xattn_lr else []
    for p in xattn:
        p.requires_grad_(True)
    if xattn:
        groups.append({"params": xattn, "lr": xattn_lr})
    opt = torch.optim.Adam(groups)
    codec = BoxCodec(GRID)
    log, t0 = [], time.perf_counter()
    for step in range(steps):
        samples = make_samples(train_images, codec, seed * 1_000_003 + step, batch_size)
        idx = torch.tensor([s.image_index for s in samples])
        loss = vlm.answer_loss(train_feats[idx], [vlm.prompt(s.prompt) for s in samples],
                               [s.answer for s in samples], insert=insert())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step == 0:
            g = insert.mlp[-1].weight.grad
            log.append({"step": 0, "grad_norm_last": float(g.norm()), "loss": float(loss)})
        opt.step()
        if log_slots_every and (step + 1) % log_slots_every == 0 and slot_probe is not None:
            with torch.no_grad():
                f, n, a = slot_probe
                log.append({"step": step + 1, "loss": float(loss), "slots": per_slot_loss(vlm, f, n, a, insert())})
                print(json.dumps(log[-1]), flush=True)
    for p in xattn:
        p.requires_grad_(False)
    insert.eval()
    with torch.no_grad():
        pi = insert()
    return pi, log, time.perf_counter() - t0


# --------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vlm", default="models/mini_vlm")
    ap.add_argument("--composed", default="data/composed")
    ap.add_argument("--max-train", type=int, default=4000, help="train-split images read (singles kept)")
    ap.add_argument("--oracle-scale", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--upper", action="store_true", help="train PIN + cross-attention (upper bound)")
    ap.add_argument("--pin", action="store_true", help="train PIN alone with the same loop (reference)")
    ap.add_argument("--full", action="store_true",
                    help="diagnostic: PIN + perceiver + cross-attention + LM all trained on the true boxes "
                         "(can this code path localise at all?)")
    ap.add_argument("--slots", type=int, default=0, help="log per-slot loss every N steps of the PIN run")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--xattn-lr", type=float, default=1e-3)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()

    vlm = load_mini(args.vlm)
    train_all = read_split_records(Path(args.composed) / "train", limit=args.max_train)
    held_all = read_split_records(Path(args.composed) / "heldout")
    tr, te = single(train_all), single(held_all)
    ftr, fte = compute_features(vlm, tr), compute_features(vlm, te)
    ytr = torch.tensor([centre_cell(im.objects[0]) for im in tr])
    yte = torch.tensor([centre_cell(im.objects[0]) for im in te])
    res: dict = {"vlm": args.vlm, "composed": args.composed, "n_single_train": len(tr), "n_single_heldout": len(te),
                 "feature_norm": float(ftr.norm(dim=-1).mean())}

    # a1: patch index from one patch feature (500 train images' patches -> heldout images' patches)
    n_img = min(500, len(tr))
    pos = torch.arange(64)
    res["a1_patch_index"] = ridge_probe(ftr[:n_img].reshape(-1, ftr.shape[-1]), pos.repeat(n_img),
                                        fte.reshape(-1, fte.shape[-1]), pos.repeat(len(te)), 64)

    def own_mean(f, ims):
        m = torch.stack([object_patch_mask(im.objects[0]) for im in ims]).float()
        return (f * m[..., None]).sum(1) / m.sum(1, keepdim=True)

    res["a2_object_patches_mean"] = ridge_probe(own_mean(ftr, tr), ytr, own_mean(fte, te), yte, 64)
    res["a3_all_patches_mean"] = ridge_probe(ftr.mean(1), ytr, fte.mean(1), yte, 64)
    res["a4_all_patches_concat"] = ridge_probe(ftr.flatten(1), ytr, fte.flatten(1), yte, 64)
    res["b_latents"] = ridge_probe(latents(vlm, ftr), ytr, latents(vlm, fte), yte, 64)
    for s in args.oracle_scale:
        code = oracle_code(ftr, s)
        res[f"b_latents_oracle_{s:g}"] = ridge_probe(latents(vlm, ftr, code), ytr, latents(vlm, fte, code), yte, 64)
    code2 = oracle_code(ftr, max(args.oracle_scale), two_d=True)
    res[f"b_latents_oracle2d_{max(args.oracle_scale):g}"] = ridge_probe(latents(vlm, ftr, code2), ytr,
                                                                      latents(vlm, fte, code2), yte, 64)
    codec = BoxCodec(GRID)
    names_tr = [im.objects[0].referral for im in tr]
    names_te = [im.objects[0].referral for im in te]
    ans_tr = [codec.encode(im.objects[0].grid_box) for im in tr]
    ans_te = [codec.encode(im.objects[0].grid_box) for im in te]
    res["c_lm_at_x1"] = ridge_probe(answer_states(vlm, ftr, names_tr, ans_tr), ytr,
                                    answer_states(vlm, fte, names_te, ans_te), yte, 64)
    code = oracle_code(ftr, max(args.oracle_scale))
    res[f"c_lm_at_x1_oracle_{max(args.oracle_scale):g}"] = ridge_probe(
        answer_states(vlm, ftr, names_tr, ans_tr, code), ytr, answer_states(vlm, fte, names_te, ans_te, code), yte, 64)
    res[f"c_lm_at_x1_oracle2d_{max(args.oracle_scale):g}"] = ridge_probe(
        answer_states(vlm, ftr, names_tr, ans_tr, code2), ytr, answer_states(vlm, fte, names_te, ans_te, code2),
        yte, 64)
    res["probe_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(res, indent=1), flush=True)

    if args.pin or args.upper or args.slots:
        train_feats = compute_features(vlm, train_all)
        held_feats = compute_features(vlm, held_all)
        val_all = read_split_records(Path(args.composed) / "val")
        val_feats = compute_features(vlm, val_all)
        res["raw_val_split"] = decode_score(vlm, val_feats, val_all)
        slot_probe = (fte[:128], names_te[:128], ans_te[:128])
        res["raw"] = decode_score(vlm, held_feats, held_all)
        runs = []
        if args.pin or args.slots:
            runs.append(("pin", None))
        if args.upper:
            runs.append(("pin+xattn", args.xattn_lr))
        if args.full:
            runs.append(("pin+perceiver+xattn+lm", args.xattn_lr))
        for name, xlr in runs:
            state = {k: v.clone() for k, v in vlm.flamingo.state_dict().items()}
            also = ("perceiver", "xattn", "lm") if name.endswith("+lm") else ("xattn",)
            pi, log, secs = train_insert_and(vlm, train_feats, train_all, steps=args.steps, lr=args.lr, xattn_lr=xlr,
                                             log_slots_every=args.slots, slot_probe=slot_probe,
                                             also=also)
            res[name] = {**decode_score(vlm, held_feats, held_all, pi), "seconds": round(secs, 1), "log": log,
                         "shuffled": decode_score(vlm, held_feats, held_all, pi, shuffle=True)["miou"]}
            # the val split: seen categories on unseen images (is a failure only zero-shot?)
            res[name]["val_split"] = decode_score(vlm, val_feats, val_all, pi)
            res[name]["lm_x1_probe"] = ridge_probe(answer_states(vlm, ftr, names_tr, ans_tr, pi), ytr,
                                                   answer_states(vlm, fte, names_te, ans_te, pi), yte, 64)
            vlm.flamingo.load_state_dict(state)  # the cross-attention back to its frozen weights
            print(json.dumps({name: {k: v for k, v in res[name].items() if k != "log"}}), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
