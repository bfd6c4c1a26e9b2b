import json
import math

import pytest
import torch
from torch import nn

from pin.errors import PinError
from pin.insert import (
    InsertConfig,
    PositionalInsert,
    load_authors_checkpoint,
    sinusoid_table,
)
from pin.vlm.base import InsertSite

torch.set_num_threads(1)

# Paper App. B.1 on OpenFlamingo (256 positions, width 1024): 0.6M / 1.2M / 2.3M params.
PAPER_PARAMS = {1: 0.6e6, 2: 1.2e6, 3: 2.3e6}


@pytest.mark.parametrize("layout", ["swiglu", "authors"])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_param_counts_match_paper(layout, layers):
    insert = PositionalInsert(InsertConfig(n_positions=256, width=1024, layers=layers, layout=layout))
    n = insert.n_trainable_params
    assert abs(n - PAPER_PARAMS[layers]) / PAPER_PARAMS[layers] < 0.15, n


def test_authors_two_layer_count_is_exact():
    insert = PositionalInsert(InsertConfig(256, 1024, layout="authors"))
    assert insert.config.hidden == (512, 768)
    assert insert.n_trainable_params == 1_217_280


def test_learned_table_adds_its_params():
    base = PositionalInsert(InsertConfig(256, 1024))
    learned = PositionalInsert(InsertConfig(256, 1024, table="learned"))
    assert learned.n_trainable_params == base.n_trainable_params + 256 * 64
    assert "table" in dict(learned.named_parameters())
    assert "table" not in dict(base.named_parameters()) and "table" in dict(base.named_buffers())


def test_sinusoid_table_is_eq_1_2():
    s = sinusoid_table(257, 64)
    assert s.shape == (257, 64)
    i, k = 5, 3
    assert s[i, 2 * k].item() == pytest.approx(math.sin(i / 10000 ** (2 * k / 64)), abs=1e-6)
    assert s[i, 2 * k + 1].item() == pytest.approx(math.cos(i / 10000 ** (2 * k / 64)), abs=1e-6)
    assert torch.all(s[0, 0::2] == 0) and torch.all(s[0, 1::2] == 1)


@pytest.mark.parametrize("layers", [0, 1, 2, 3])
@pytest.mark.parametrize("layout", ["swiglu", "authors"])
def test_forward_shape_and_small_start(layers, layout):
    torch.manual_seed(0)
    insert = PositionalInsert(InsertConfig(n_positions=17, width=24, layers=layers, layout=layout))
    pi = insert()
    assert pi.shape == (17, 24) and pi.dtype == torch.float32
    # the last Linear starts near zero: a fresh insert barely disturbs the frozen VLM
    assert pi.abs().max() < 0.1
    ones = PositionalInsert(InsertConfig(17, 24, layers=layers, layout=layout, out_init=1.0))
    assert ones.mlp[-1].weight.abs().max() > 10 * insert.mlp[-1].weight.abs().max()


def test_blip2_site_with_cls():
    site = InsertSite(n_positions=257, width=1408, grid=16, has_cls=True)
    cfg = InsertConfig.for_site(site)
    assert (cfg.n_positions, cfg.width, cfg.has_cls) == (257, 1408, True)
    assert PositionalInsert(cfg)().shape == (257, 1408)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(layers=4),  # no default widths
        dict(layers=2, hidden=(8,)),
        dict(layers=-1),
        dict(table="fixed"),
        dict(layout="mlp"),
        dict(n_positions=0),
    ],
)
def test_config_validation(kwargs):
    base = dict(n_positions=16, width=8)
    base.update(kwargs)
    with pytest.raises(ValueError):
        InsertConfig(**base)


def test_config_is_frozen_and_resolves_hidden():
    cfg = InsertConfig(16, 8, layers=3)
    assert cfg.hidden == (512, 512, 768)
    assert cfg == InsertConfig(16, 8, layers=3, hidden=[512, 512, 768])
    with pytest.raises(Exception):
        cfg.width = 3  # type: ignore[misc]
    assert InsertConfig(16, 8, layers=4, hidden=(4, 4, 4, 4)).hidden == (4, 4, 4, 4)


@pytest.mark.parametrize("table", ["sinusoidal", "learned"])
@pytest.mark.parametrize("layout", ["swiglu", "authors"])
def test_save_and_load_round_trip(tmp_path, table, layout):
    torch.manual_seed(0)
    insert = PositionalInsert(InsertConfig(17, 24, layers=2, hidden=(16, 12), table=table, layout=layout))
    with torch.no_grad():
        for p in insert.parameters():
            p.add_(torch.randn_like(p))
    insert.save_pretrained(tmp_path / "pin")
    assert sorted(p.name for p in (tmp_path / "pin").iterdir()) == ["config.json", "model.safetensors"]
    saved = json.loads((tmp_path / "pin" / "config.json").read_text())
    assert saved["method"] == "pin" and saved["config"]["layout"] == layout
    loaded = PositionalInsert.from_pretrained(tmp_path / "pin")
    assert loaded.config == insert.config
    assert torch.equal(loaded(), insert())
    assert "grid" not in json.loads((tmp_path / "pin" / "config.json").read_text())
    insert.save_pretrained(tmp_path / "pin", grid=14)  # the box grid it answers on, kept with it
    assert json.loads((tmp_path / "pin" / "config.json").read_text())["grid"] == 14
    assert PositionalInsert.from_pretrained(tmp_path / "pin").config == insert.config


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(PinError, match="not a saved PositionalInsert"):
        PositionalInsert.from_pretrained(tmp_path)
    PositionalInsert(InsertConfig(17, 24, layers=1, hidden=(8,))).save_pretrained(tmp_path)
    good = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(good[:40])
    with pytest.raises(PinError, match=r"model\.safetensors: damaged or truncated weights file"):
        PositionalInsert.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(good)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["config"]["width"] = 25
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PinError, match="do not match"):
        PositionalInsert.from_pretrained(tmp_path)


def _authors_mlp(dims=(64, 512, 768, 1024)) -> nn.Sequential:
    """A module in the authors' layout, built here to write a file in their key format."""
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-2], dims[1:-1]):
        layers += [nn.Linear(a, b), nn.SiLU(), nn.LayerNorm(b)]
    layers.append(nn.Linear(dims[-2], dims[-1]))
    return nn.Sequential(*layers)


def test_load_authors_checkpoint_mlp_keys(tmp_path):
    torch.manual_seed(0)
    mlp = _authors_mlp((64, 32, 48, 40))
    with torch.no_grad():
        for p in mlp.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / "PIN_OF.pt"
    torch.save({f"MLP.{k}": v for k, v in mlp.state_dict().items()}, path)
    insert = load_authors_checkpoint(path)
    cfg = insert.config
    assert (cfg.layout, cfg.n_positions, cfg.d_table, cfg.hidden, cfg.width) == ("authors", 256, 64, (32, 48), 40)
    want = mlp(sinusoid_table(256, 64))
    assert torch.allclose(insert(), want, atol=1e-6)
    # with the CLS position of BLIP-2
    assert load_authors_checkpoint(path, n_positions=257, has_cls=True)().shape == (257, 40)


def test_load_authors_training_checkpoint_format(tmp_path):
    torch.manual_seed(0)
    mlp = _authors_mlp((64, 16, 8))
    path = tmp_path / "model_epoch1.pt"
    # their training checkpoints: {"mlp": state_dict, "pos_enc": (1, n, d)}; here a learned table
    pos = torch.rand(1, 10, 64)
    torch.save({"mlp": mlp.state_dict(), "pos_enc": pos}, path)
    insert = load_authors_checkpoint(path)
    assert insert.config.table == "learned" and insert.config.n_positions == 10
    assert torch.allclose(insert(), mlp(pos[0]), atol=1e-6)
    # a sinusoidal pos_enc is recognised as ours
    torch.save({"mlp": mlp.state_dict(), "pos_enc": sinusoid_table(10, 64)[None]}, path)
    assert load_authors_checkpoint(path).config.table == "sinusoidal"


def test_load_authors_checkpoint_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(PinError):
        load_authors_checkpoint(bad)
    torch.save({"something": torch.zeros(2)}, bad)
    with pytest.raises(PinError, match="MLP"):
        load_authors_checkpoint(bad)
    with pytest.raises(PinError):
        load_authors_checkpoint(tmp_path / "missing.pt")
