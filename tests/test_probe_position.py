"""research/probe_position.py: the linear probe and the slot bookkeeping it reports."""
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import torch

from pin.vlm.of_text import IGNORE_INDEX
from pin.vlm.tokenizer import build_word_tokenizer

spec = importlib.util.spec_from_file_location("probe_position", Path(__file__).parents[1] / "research" / "probe_position.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def test_ridge_probe_reads_a_linear_code_and_not_noise():
    torch.manual_seed(0)
    y = torch.randint(0, 64, (600,))
    code = torch.randn(64, 32)
    x = code[y] + 0.1 * torch.randn(600, 32)
    good = probe.ridge_probe(x[:500], y[:500], x[500:], y[500:], 64)
    noise = probe.ridge_probe(torch.randn(500, 32), y[:500], torch.randn(100, 32), y[500:], 64)
    assert good["acc"] > 0.9 and good["corr_x"] > 0.5
    assert noise["acc"] < 0.1 and abs(noise["corr_x"]) < 0.3


def test_slot_positions_follow_the_commas():
    tok = build_word_tokenizer(["dog"])
    ids = tok([" [28,0,112,56]"], add_special_tokens=False)["input_ids"][0]
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, *ids]])
    slot = probe.slot_positions(SimpleNamespace(tokenizer=tok), labels.clone(), labels)
    pieces = tok.convert_ids_to_tokens(ids)
    got = {k: "".join(p for p, s in zip(pieces, slot[0, 2:].tolist()) if s == k) for k in range(4)}
    assert got == {0: "28", 1: "0", 2: "112", 3: "56"}
    assert (slot[0, :2] == -1).all()


def test_centre_cell_and_patch_mask_are_row_major():
    obj = SimpleNamespace(grid_box=(6, 0, 8, 2))  # top-right corner, 2x2 cells
    assert probe.centre_cell(obj) == 1 * 8 + 7  # centre (7.0, 1.0): row 1, column 7
    m = probe.object_patch_mask(obj).view(8, 8)
    assert m[0:2, 6:8].all() and m.sum() == 4
