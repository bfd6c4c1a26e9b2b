"""research/mini_vlm_report.py: the mini-VLM issue's bar, checked from the metric files."""
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "research" / "mini_vlm_report.py"


def _report():
    spec = importlib.util.spec_from_file_location("mini_vlm_report", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _eval(pin=0.45, shuffled=0.2, cx=0.7, own=0.4, other=0.2, raw=0.2):
    return {"pin": {"miou": pin, "centre_x_corr": cx, "centre_y_corr": cx, "iou_own_multi": own,
                    "iou_other_multi": other}, "pin_shuffled": {"miou": shuffled}, "raw": {"miou": raw},
            "constant": {"miou": 0.28}, "random": {"miou": 0.14}}


@pytest.mark.parametrize("change, floor", [({}, True), ({"pin": 0.27}, False), ({"cx": 0.49}, False),
                                           ({"own": 0.24}, False), ({"shuffled": 0.35}, False)])
def test_each_floor_check_can_fail_alone(tmp_path, capsys, change, floor):
    path = tmp_path / "synthetic.json"
    path.write_text(json.dumps(_eval(**change)))
    code = _report().main(str(path), str(tmp_path / "none.json"), strict=True)
    out = capsys.readouterr().out
    assert (code == 0) is floor
    assert f"floor: {'PASS' if floor else 'FAIL'}" in out
