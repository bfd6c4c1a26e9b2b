"""The offline default's committed result keeps the mini-VLM issue's floor and goal: on the
held-out synthetic split PIN beats the constant box, its boxes follow the truth (centre-x
correlation >= 0.5), they follow the *named* object (own - other IoU >= 0.05), shuffling the
image's patches costs PIN >= 25%; and PIN is >= 1.5x the constant box and >= 2x random, with
the raw VLM no better than the constant box. metrics/eval/synthetic.json is what a fresh clone's `dvc repro`
writes (DVC checks it is current), so a change that loses the floor cannot land quietly."""
import importlib.util
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _report():
    spec = importlib.util.spec_from_file_location("mini_vlm_report", ROOT / "research" / "mini_vlm_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_offline_metrics_hold_the_floor_and_the_goal():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert (params["profile"], params["method"], params["vlm"]["name"]) == ("offline", "pin", "mini")
    ev = json.loads((ROOT / "metrics" / "eval" / "synthetic.json").read_text())
    floor, goal = _report().bar(ev)
    assert all(floor.values()), {k: v for k, v in floor.items() if not v}
    assert all(goal.values()), {k: v for k, v in goal.items() if not v}
    assert ev["pin"]["parse_rate"] >= 0.99 and ev["raw"]["miou"] <= ev["constant"]["miou"]


def test_the_floor_check_fails_a_pin_at_the_constant_box():
    ev = json.loads((ROOT / "metrics" / "eval" / "synthetic.json").read_text())
    flat = {**ev, "pin": {**ev["pin"], "miou": ev["constant"]["miou"], "iou_other_multi": ev["pin"]["iou_own_multi"]}}
    floor, _ = _report().bar(flat)
    assert not floor["floor: PIN > constant"] and not floor["floor: own - other IoU >= 0.05"]
    assert floor["floor: centre-x correlation >= 0.5"] == (ev["pin"]["centre_x_corr"] >= 0.5)
    near = {**ev, "pin": {**ev["pin"], "miou": 1.49 * ev["constant"]["miou"]}}
    floor, goal = _report().bar(near)
    assert all(floor.values()) and not goal["goal: PIN >= 1.5x constant"]
