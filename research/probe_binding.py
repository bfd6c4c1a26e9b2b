"""Is the mini VLM's appearance readout object-specific before PIN?

With ``pretrain.slot=appearance`` the mini VLM answers "In the image is a {name} located at" with
``[c*a, c*s, c*a + w, c*s + h]``, where (a, s) are the named object's brightness/saturation
levels. PIN can only make the boxes follow the *named* object if this readout already picks the
named object's levels when several objects are in view. This probe asks, on composed images whose
objects carry different levels (``compose.appearance: all``, the V2 held-out split), for every
object whose name is unique in its image, and sorts the answer's x1 (and y1) into:

* ``named``: cell * the named object's level;
* ``other``: cell * another object's level in the same image (and not the named one's);
* ``mean``: cell * the rounded mean level of the image's objects (and neither of the above);
* ``none``: anything else, or no box.

Objects whose level another object shares are left out of that axis (the answer cannot tell
them apart). Single-object images are the control (the readout without a choice to make).

``--states`` also asks where the choice is lost: linear (ridge) probes on the LM's hidden state
at the position that writes x1, one per layer, trained on the train split's multi-object
queries and tested on the held-out ones, read the named object's brightness level and, as the
comparison, another object's. A state that holds the named level but an answer that does not
would put the loss in the last step; a state that holds neither puts it before.

    python research/probe_binding.py --vlm models/mini_vlm --composed data/composed --out lab/binding.json
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import importlib.util

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pin.composed import read_split_records  # noqa: E402
from pin.frame import FRAME  # noqa: E402
from pin.vlm.mini import load_mini_parts  # noqa: E402
from pin.vlm.openflamingo import OpenFlamingoAdapter  # noqa: E402
from pin.vlm.pretrain import _slot_corner, facts_of, features_of, pixels_uint8  # noqa: E402
from pin.vlm.pretrain_text import IMAGE_TOKEN, PROMPT, ObjectFact, TextRecipe, slot_answer  # noqa: E402

KINDS = ("named", "other", "mean", "none")


def classify(value: float | None, named: int, others: list[int], cell: int) -> str | None:
    """Which object's level ``value`` (an x1 or y1 in the frame) reads; None: not decidable."""
    if named in others:
        return None
    if value is None:
        return "none"
    if value == cell * named:
        return "named"
    if any(value == cell * o for o in others):
        return "other"
    if value == cell * round((named + sum(others)) / (1 + len(others))):
        return "mean"
    return "none"


def queries(images) -> list[tuple[int, str, tuple[int, int], list[tuple[int, int]]]]:
    """(image index, name, its levels, the other objects' levels) for every uniquely named object."""
    out = []
    for i, im in enumerate(images):
        facts = facts_of(im)
        counts = Counter(f.name for f in facts)
        for j, f in enumerate(facts):
            if counts[f.name] == 1:
                out.append((i, f.name, f.levels, [g.levels for k, g in enumerate(facts) if k != j]))
    return out


def name_pairs(answered: dict[int, list], cell: int) -> dict:
    """Two objects of one image, each named in turn: how often the two answers' corners are the
    same, against how often their true corners are. A readout that ignores the name answers the
    same corner whichever object is asked for."""
    same_answer = same_truth = n = 0
    for rows in answered.values():
        for k in range(len(rows)):
            for m in range(k + 1, len(rows)):
                (ca, la), (cb, lb) = rows[k], rows[m]
                n += 1
                same_answer += ca is not None and ca == cb
                same_truth += la == lb
    return {"pairs": n, "same_answer": round(same_answer / n, 3) if n else None,
            "same_truth": round(same_truth / n, 3) if n else None}


def _probe_position():
    spec = importlib.util.spec_from_file_location("probe_position", Path(__file__).with_name("probe_position.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def decidable(qs):
    """Multi-object queries whose named brightness level no other object shares, with one such
    other object's level (the first) as the comparison target."""
    return [(i, name, lv, [o for o in others if o[0] != lv[0]][0]) for i, name, lv, others in qs
            if others and all(o[0] != lv[0] for o in others)]


def state_probes(adapter, feats_tr, qs_tr, feats_te, qs_te, cell: int, layers: int) -> dict:
    """Per LM layer: ridge-probe accuracy for the named object's and another object's brightness
    level from the hidden state at x1 (train queries -> held-out queries)."""
    pp = _probe_position()
    recipe = TextRecipe(slot="appearance", cell=cell)

    def states(feats, qs, layer):
        answers = [slot_answer(ObjectFact(name, 2 * cell, 2 * cell, levels=lv), recipe=recipe)
                   for _, name, lv, _ in qs]
        return pp.answer_states(adapter, feats[[q[0] for q in qs]], [q[1] for q in qs], answers, layer=layer)

    tr, te = decidable(qs_tr), decidable(qs_te)
    out = {"n_train": len(tr), "n_test": len(te)}
    for layer in range(layers + 1):
        xtr, xte = states(feats_tr, tr, layer), states(feats_te, te, layer)
        row = {}
        for target, k in (("named", 2), ("other", 3)):
            ytr = torch.tensor([q[k][0] for q in tr])
            yte = torch.tensor([q[k][0] for q in te])
            r = pp.ridge_probe(xtr, ytr, xte, yte, n_classes=int(max(ytr.max(), yte.max())) + 1)
            row[target], row["chance"] = round(r["acc"], 3), round(r["chance"], 3)
        out[f"layer_{layer}"] = row
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vlm", required=True)
    ap.add_argument("--composed", default="data/composed")
    ap.add_argument("--split", default="heldout")
    ap.add_argument("--max-images", type=int, default=500)
    ap.add_argument("--grid", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--states", action="store_true", help="also the linear probes on the LM state at x1")
    ap.add_argument("--train-images", type=int, default=3000, help="train-split images for --states")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cell = FRAME // args.grid
    images = read_split_records(Path(args.composed) / args.split, limit=args.max_images)
    if not any(len(o.appearance) == 2 for im in images for o in im.objects):
        sys.exit(f"{args.composed}/{args.split}: its objects carry no appearance levels (compose.appearance: all)")
    flamingo, processor, tokenizer, config = load_mini_parts(args.vlm)
    adapter = OpenFlamingoAdapter(flamingo, processor, tokenizer, name="mini")
    u8 = pixels_uint8(config.image_size, images)
    feats = features_of(adapter, u8)
    qs = queries(images)
    tally = {f"{group}_{axis}": Counter() for group in ("single", "multi") for axis in ("x1", "y1")}
    answered: dict[int, list] = {}  # multi-object image -> (corner, levels) of each named object
    for start in range(0, len(qs), 64):
        batch = qs[start:start + 64]
        outs = adapter.generate(feats[[q[0] for q in batch]], [IMAGE_TOKEN + PROMPT.format(obj=q[1]) for q in batch],
                                max_new_tokens=20)
        for (i, _, levels, others), out in zip(batch, outs):
            corner = _slot_corner(out)
            if others:
                answered.setdefault(i, []).append((corner, levels))
            group = "multi" if others else "single"
            for axis, name in enumerate(("x1", "y1")):
                kind = classify(None if corner is None else corner[axis], levels[axis],
                                [o[axis] for o in others], cell)
                if kind is not None:
                    tally[f"{group}_{name}"][kind] += 1
    result = {"vlm": args.vlm, "composed": args.composed, "split": args.split, "images": len(images),
              "queries": len(qs), "mean_objects_multi": round(
                  sum(len(q[3]) + 1 for q in qs if q[3]) / max(sum(1 for q in qs if q[3]), 1), 2)}
    for key, counts in tally.items():
        n = sum(counts.values())
        result[key] = {"n": n, **{k: round(counts[k] / n, 3) if n else None for k in KINDS}}
    result["name_pairs"] = name_pairs(answered, cell)
    if args.states:
        train = read_split_records(Path(args.composed) / "train", limit=args.train_images)
        feats_tr = features_of(adapter, pixels_uint8(config.image_size, train))
        result["states_x1"] = state_probes(adapter, feats_tr, queries(train), feats, qs, cell, config.lm_layers)
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
