"""Print Table 1 of the paper for our held-out synthetic split from the sweep's DVC experiments.

    dvc exp show --json > exps.json && python scripts/baselines_table.py exps.json
    dvc exp show --json | python scripts/baselines_table.py

One row per method (the newest experiment that ran it; ``raw``, ``random`` and ``constant`` from
the newest experiment of a trained method, since the in-context sweep usually runs on a subset of
the queries), with the number of queries each row was measured on, the trainable parameter count from ``metrics/train.json``, then the paper's
ordering on COCO (OpenFlamingo) next to ours. Reads what DVC recorded; recomputes nothing.
"""
from __future__ import annotations

import json
import sys

EVAL = "metrics/eval/synthetic.json"
TRAIN = "metrics/train.json"
# Tab. 1, OpenFlamingo, COCO mIoU (the paper has no synthetic-split table)
PAPER_COCO = {"random": 0.12, "incontext_2": 0.10, "incontext_5": 0.10, "incontext_10": 0.09, "coop_llm": 0.22,
              "vpt_fusion": 0.26, "vpt_vision": 0.33, "lora_vision": 0.33, "pin": 0.35}
ORDER = ["raw", "random", "constant", "incontext_2", "incontext_5", "incontext_10", "coop_llm", "vpt_fusion",
         "vpt_vision", "lora_vision", "pin"]


def records(node):
    """Every (timestamp, params, metrics) in DVC's nested ``exp show --json`` answer."""
    if isinstance(node, list):
        for item in node:
            yield from records(item)
    elif isinstance(node, dict):
        data = node.get("data")
        if isinstance(data, dict) and "params" in data and node.get("rev") != "workspace":
            yield data.get("timestamp") or "", data.get("params") or {}, data.get("metrics") or {}
        for key in ("experiments", "revs"):
            if node.get(key):
                yield from records(node[key])


def _data(files: dict, path: str) -> dict:
    return ((files or {}).get(path) or {}).get("data") or {}


def collect(exps) -> tuple[dict[str, dict], dict[str, int]]:
    rows: dict[str, dict] = {}
    reference: dict[str, dict] = {}  # raw, random, constant of the newest in-context run
    n_params: dict[str, int] = {}
    for _, params, metrics in sorted(records(exps), key=lambda r: r[0]):  # newest last: it wins
        method = _data(params, "params.yaml").get("method", "pin")
        ev, tr = _data(metrics, EVAL), _data(metrics, TRAIN)
        for name, row in ev.items():
            if name == "dataset" or not isinstance(row, dict) or name.endswith("_shuffled"):
                continue
            if name in ("raw", "random", "constant"):
                (reference if method == "incontext" else rows)[name] = row
            elif name == method or (method == "incontext" and name.startswith("incontext_")):
                rows[name] = row
        if tr.get("trainable_params") is not None:
            n_params[method] = tr["trainable_params"]
    return {**reference, **rows}, n_params


def cell(row: dict, key: str) -> str:
    v, sd = row.get(key), row.get(f"{key}_std")
    if v is None:
        return "-"
    return f"{v:.3f}" + (f"±{sd:.3f}" if sd is not None else "")


def main(argv: list[str]) -> int:
    exps = json.load(open(argv[1]) if len(argv) > 1 else sys.stdin)
    rows, n_params = collect(exps)
    if not rows:
        print("no experiments with metrics/eval/synthetic.json found", file=sys.stderr)
        return 1
    print("| method | mIoU | mIoU_M | mIoU_L | P@0.5 | parse rate | queries | trainable params | paper COCO mIoU |")
    print("|" + "---|" * 9)
    for name in [n for n in ORDER if n in rows]:
        r = rows[name]
        params = n_params.get("incontext" if name.startswith("incontext_") else name, 0)
        paper = f"{PAPER_COCO[name]:.2f}" if name in PAPER_COCO else "-"
        print(f"| {name} | {cell(r, 'miou')} | {cell(r, 'miou_m')} | {cell(r, 'miou_l')} | {cell(r, 'p50')} | "
              f"{cell(r, 'parse_rate')} | {r.get('n_queries', '-')} | {params:,} | {paper} |")
    ours = [n for n in ORDER if n in rows and n in PAPER_COCO]
    by_ours = sorted(ours, key=lambda n: rows[n]["miou"])
    by_paper = sorted(ours, key=lambda n: PAPER_COCO[n])
    print(f"\nordering by mIoU, ours:  {' < '.join(by_ours)}")
    print(f"ordering by mIoU, paper: {' < '.join(by_paper)} (COCO)")
    flipped = [(a, b) for i, a in enumerate(ours) for b in ours[i + 1:]
               if (PAPER_COCO[a] - PAPER_COCO[b]) * (rows[a]["miou"] - rows[b]["miou"]) < 0]
    print("pairs ordered against the paper: " + (", ".join(f"{a} vs {b} ({rows[a]['miou']:.3f} vs "
                                                           f"{rows[b]['miou']:.3f})" for a, b in flipped) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
