"""scripts/baselines_table.py: which experiment each Table 1 row comes from."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("baselines_table", ROOT / "scripts" / "baselines_table.py")
table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(table)


def _exp(stamp: str, method: str, queries: int, miou: dict[str, float], trainable: int = 0) -> dict:
    ev = {name: {"miou": v, "n_queries": queries} for name, v in miou.items()}
    return {"rev": stamp, "data": {"timestamp": stamp,
                                   "params": {"params.yaml": {"data": {"method": method}}},
                                   "metrics": {table.EVAL: {"data": {"dataset": "synthetic", **ev}},
                                               table.TRAIN: {"data": {"trainable_params": trainable}}}}}


def _sweep() -> list[dict]:
    # The in-context run is the newest and ran on a 200-query subset with its own reference rows.
    return [_exp("2026-12-04T10:00", "pin", 988, {"pin": 0.45, "raw": 0.24, "constant": 0.31, "random": 0.16}, 661_632),
            _exp("2026-12-04T11:00", "lora_vision", 988, {"lora_vision": 0.39, "raw": 0.24, "constant": 0.31,
                                                          "random": 0.16, "lora_vision_shuffled": 0.18}, 114_688),
            _exp("2026-12-04T12:00", "incontext", 200, {"incontext_2": 0.0, "raw": 0.26, "constant": 0.34,
                                                        "random": 0.17})]


def test_reference_rows_come_from_a_trained_method_run_not_the_incontext_subset():
    rows, n_params = table.collect(_sweep())
    assert rows["raw"]["miou"] == 0.24 and rows["constant"]["n_queries"] == 988
    assert rows["incontext_2"]["n_queries"] == 200
    assert "lora_vision_shuffled" not in rows
    assert n_params == {"pin": 661_632, "lora_vision": 114_688, "incontext": 0}


def test_incontext_alone_still_has_its_reference_rows():
    rows, _ = table.collect(_sweep()[2:])
    assert rows["raw"]["miou"] == 0.26


def test_printed_table_names_the_query_count(capsys, tmp_path):
    path = tmp_path / "exps.json"
    path.write_text(__import__("json").dumps(_sweep()))
    assert table.main(["baselines_table.py", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| constant | 0.310 |" in out and "| 988 |" in out and "| incontext_2 | 0.000 |" in out
    assert "pairs ordered against the paper: none" in out
