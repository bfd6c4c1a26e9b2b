"""Print the offline default's story in one table: does PIN unlock the mini VLM?

    python research/mini_vlm_report.py [metrics/eval/synthetic.json] [metrics/pretrain.json]

Reads what `dvc repro` wrote (nothing is recomputed) and checks the bar of the mini-VLM issue.
Floor: PIN > the constant box; the correlation of PIN's box centre-x with the truth >= 0.5; IoU
with the queried object minus IoU with the other objects >= 0.05; shuffled images drop PIN's
mIoU by >= 25%. Goal: PIN >= 1.5x constant and >= 2x random, with the raw VLM <= constant.
Exit code 0 whatever the verdict (it is a report); ``--strict`` exits 1 unless the floor holds.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def bar(ev: dict) -> tuple[dict[str, bool], dict[str, bool]]:
    """The issue's floor checks, and the floor plus goal checks, on an eval metrics mapping."""
    pin, const, rnd, raw = (ev.get(k, {}).get("miou") or 0.0 for k in ("pin", "constant", "random", "raw"))
    shuf = ev.get("pin_shuffled", {}).get("miou")
    own, other = ev.get("pin", {}).get("iou_own_multi"), ev.get("pin", {}).get("iou_other_multi")
    cx = ev.get("pin", {}).get("centre_x_corr")
    floor = {
        "floor: PIN > constant": pin > const,
        "floor: centre-x correlation >= 0.5": cx is not None and cx >= 0.5,
        "floor: own - other IoU >= 0.05": own is not None and other is not None and own - other >= 0.05,
        "floor: shuffled images drop PIN by >= 25%": shuf is not None and shuf <= 0.75 * pin,
    }
    return floor, {
        **floor,
        "goal: PIN >= 1.5x constant": const > 0 and pin >= 1.5 * const,
        "goal: PIN >= 2x random": rnd > 0 and pin >= 2 * rnd,
        "goal: raw <= constant": raw <= const,
    }


def main(eval_path: str = "metrics/eval/synthetic.json", pretrain_path: str = "metrics/pretrain.json",
         strict: bool = False) -> int:
    ev = json.loads(Path(eval_path).read_text())
    pre = json.loads(Path(pretrain_path).read_text()) if Path(pretrain_path).exists() else {}
    rows = [m for m in ("pin", "pin_shuffled", "raw", "constant", "random") if m in ev]
    print(f"{'method':<14}{'mIoU':>8}{'mIoU_s':>8}{'mIoU_m':>8}{'mIoU_l':>8}{'P@0.5':>8}{'parse':>8}{'distinct':>10}")
    for m in rows:
        r = ev[m]
        cells = [r.get(k) for k in ("miou", "miou_s", "miou_m", "miou_l", "p50", "parse_rate")]
        txt = "".join(f"{v:>8.3f}" if isinstance(v, (int, float)) else f"{'-':>8}" for v in cells)
        print(f"{m:<14}{txt}{r.get('distinct_boxes', '-'):>10}")
    pin, const, rnd = (ev.get(k, {}).get("miou") or 0.0 for k in ("pin", "constant", "random"))
    own, other = ev.get("pin", {}).get("iou_own_multi"), ev.get("pin", {}).get("iou_other_multi")
    cx, cy = ev.get("pin", {}).get("centre_x_corr"), ev.get("pin", {}).get("centre_y_corr")
    rec = pre.get("recognition_heldout", {})
    print()
    print(f"IoU with the queried object {own} vs other objects {other} (images with several objects)")
    print(f"PIN's box centre vs the truth: correlation x {cx}, y {cy}")
    print(f"recognition (held-out images): captions P/R {rec.get('caption_precision')}/{rec.get('caption_recall')}, "
          f"yes/no {rec.get('qa_exists')}, count {rec.get('qa_count')}, size slot {rec.get('qa_slot_size')}; "
          f"vision mAP {pre.get('vision', {}).get('heldout_map')}")
    if "qa_slot_corner_single" in rec:  # the appearance slot: the readout PIN must move
        print(f"appearance readout before PIN (x1,y1 = cell * the named object's levels): single-object "
              f"{rec['qa_slot_corner_single']}, multi-object {rec.get('qa_slot_corner_multi')}; "
              f"level mAP {pre.get('vision', {}).get('heldout_level_map')}")
    floor, checks = bar(ev)
    print()
    for name, ok in checks.items():
        print(f"[{'x' if ok else ' '}] {name}")
    print(f"PIN / constant = {pin / const:.2f}x, PIN / random = {pin / rnd:.2f}x" if const and rnd else "")
    verdict = all(floor.values())
    print(f"floor: {'PASS' if verdict else 'FAIL'}; goal: {'PASS' if all(checks.values()) else 'FAIL'}")
    return 0 if verdict or not strict else 1


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--strict"]
    sys.exit(main(*args, strict="--strict" in sys.argv[1:]))
