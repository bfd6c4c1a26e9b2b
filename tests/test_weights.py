"""pin.weights: a damaged weights file is one line naming it, for every format we read."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from pin.errors import PinError
from pin.weights import check_weights_file, check_weights_folder, read_weights

STATE = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4)}


def _write(path, fmt):
    if fmt == "safetensors":
        save_file(STATE, str(path))
    else:
        torch.save(STATE, path, _use_new_zipfile_serialization=(fmt == "zip"))
    return path


@pytest.mark.parametrize("fmt, name", [("safetensors", "m.safetensors"), ("zip", "m.pt"), ("legacy", "m.bin")])
def test_a_whole_file_reads(tmp_path, fmt, name):
    state = read_weights(_write(tmp_path / name, fmt))
    assert state.keys() == STATE.keys() and all(torch.equal(state[k], STATE[k]) for k in STATE)


@pytest.mark.parametrize("fmt, name, cut", [("safetensors", "m.safetensors", 0.5), ("safetensors", "m.safetensors", -4),
                                            ("safetensors", "m.safetensors", 4), ("zip", "m.pt", 0.5),
                                            ("legacy", "m.bin", 0.5)])
def test_a_truncated_file_is_one_line_naming_it(tmp_path, fmt, name, cut):
    path = _write(tmp_path / name, fmt)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * cut) if isinstance(cut, float) else cut] if cut > 0 else raw[:cut])
    with pytest.raises(PinError, match=rf"^{path}: damaged or truncated weights file \(.+\); download or save it "
                                       r"again$") as err:
        read_weights(path)
    assert "\n" not in str(err.value)


def test_the_folder_check_finds_the_damaged_file(tmp_path):
    _write(tmp_path / "model-00001.safetensors", "safetensors")
    bad = _write(tmp_path / "model-00002.safetensors", "safetensors")
    bad.write_bytes(bad.read_bytes()[:-1])
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(PinError, match=r"model-00002\.safetensors: damaged or truncated weights file"):
        check_weights_folder(tmp_path)
    check_weights_folder("Salesforce/blip2-opt-2.7b")  # a hub id: nothing to check here
    with pytest.raises(PinError, match="weights file not found"):
        check_weights_file(tmp_path / "none.safetensors")
