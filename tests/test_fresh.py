"""train.compose=fresh end to end through the stages (generate -> filter -> compose -> train, tiny
shapes): every sample a newly composed image, the encoder in every step, DataLoader workers
composing ahead. The run is a function of its seed: the same bytes with 1 worker or none, other
bytes with another seed."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

torch.set_num_threads(1)

from stage_runner import run_entry, write_params  # noqa: E402
from test_train import CFG  # noqa: E402

TRAIN = {"steps": 4, "batch_size": 4, "lr": 1e-2, "checkpoint_every": 2, "log_every": 1, "compose": "fresh"}
COMPOSE = {"backgrounds": "white", "image_size": 64, "n_train": 4, "n_val": 4, "n_heldout": 2, "n_pretrain": 0,
           "workers": 1, "shard_size": 8}


def _params(ws, **train):
    write_params(ws, generate={"backend": "shapes", "max_categories": 3, "per_category": 3, "image_size": 32},
                 filter={"min_per_class": 1}, compose=COMPOSE, train={**TRAIN, **train},
                 vlm={"device": "cpu", "path": "models/mini_vlm"}, pin={"layers": 1, "hidden": [16]})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from pin.vlm.mini import build_mini_flamingo, save_mini

    ws = tmp_path_factory.mktemp("fresh") / "ws"
    ws.mkdir()
    _params(ws)
    for stage in ("generate", "filter", "compose"):
        code, err, _ = run_entry(stage, ws)
        assert code == 0, (stage, err)
    torch.manual_seed(0)
    flamingo, _, tok = build_mini_flamingo(CFG, ["red", "circle"])
    save_mini(ws / "models" / "mini_vlm", flamingo, tok, CFG, meta={"vocabulary": ["red", "circle"]})
    return ws


def _train(inputs, path, **train):
    shutil.copytree(inputs, path)
    _params(path, **train)
    code, err, out = run_entry("train", path)
    assert code == 0, err
    return {f.relative_to(path).as_posix(): f.read_bytes() for d in ("models/pin", "metrics/train_live")
            for f in sorted((path / d).rglob("*")) if f.is_file()} | \
        {"train.json": (path / "metrics" / "train.json").read_bytes()}


def test_fresh_composition_trains_and_is_reproducible_from_its_seed(inputs, tmp_path):
    a = _train(inputs, tmp_path / "a", compose_workers=1)
    b = _train(inputs, tmp_path / "b", compose_workers=0)
    assert a == b  # composed in a worker process or in the training process: the same samples
    metrics = json.loads(a["train.json"])
    assert metrics["compose"] == "fresh" and metrics["n_train_images"] == 16 and metrics["steps"] == 4
    c = _train(inputs, tmp_path / "c", compose_workers=0, seed=1)
    assert c["models/pin/model.safetensors"] != a["models/pin/model.safetensors"]


def test_fresh_batches_split_over_processes_and_follow_the_seed(inputs):
    from pin.fresh import FreshBatches
    from pin.params import ComposeParams

    p = ComposeParams(**COMPOSE)
    objects, filtered = inputs / "data" / "objects", inputs / "data" / "filtered" / "manifest.parquet"
    one = FreshBatches(p, objects, filtered, seed=0, batch_size=4)
    halves = [FreshBatches(p, objects, filtered, seed=0, batch_size=4, rank=r, world=2) for r in (0, 1)]
    step = one[3]
    assert [(q, a) for _, q, a in step] == [(q, a) for h in halves for _, q, a in h[3]]  # N processes: slices
    assert [im.tobytes() for im, _, _ in step] == [im.tobytes() for im, _, _ in one[3]]
    other = FreshBatches(p, objects, filtered, seed=1, batch_size=4)[3]
    assert [im.tobytes() for im, _, _ in other] != [im.tobytes() for im, _, _ in step]
    assert all(a.startswith(" [") for _, _, a in step)


def test_bench_reports_compose_per_core_next_to_the_train_step(inputs, tmp_path):
    import subprocess
    import sys

    from stage_runner import ROOT

    out = tmp_path / "fresh.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "fresh.py"), "--steps", "1", "--batch", "2",
                           "--workers", "1", "--image-size", "64", "--out", str(out),
                           "--objects", str(inputs / "data" / "objects"),
                           "--filtered", str(inputs / "data" / "filtered" / "manifest.parquet")],
                          capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["compose_samples_per_s_per_core"] > 0 and result["mini_train_samples_per_s"]["fresh"] > 0
    assert {r["arch"] for r in result["reference"]["rows"]} == {"mini", "openflamingo3b", "blip2"}
    assert "samples/s per core" in proc.stdout


def test_fresh_run_killed_after_a_checkpoint_resumes_to_the_same_weights(inputs, tmp_path):
    from test_train import _Crash, _CrashingLive

    from pin.boxes import BoxCodec
    from pin.fresh import FreshBatches
    from pin.insert import InsertConfig, PositionalInsert
    from pin.methods.pin_method import PinMethod
    from pin.params import ComposeParams
    from pin.train import train_method
    from pin.vlm.mini import load_mini

    fresh = FreshBatches(ComposeParams(**COMPOSE), inputs / "data" / "objects",
                         inputs / "data" / "filtered" / "manifest.parquet", seed=0, batch_size=4)

    def run(ckpt, live=None):
        vlm = load_mini(inputs / "models" / "mini_vlm")
        torch.manual_seed(0)
        insert = PositionalInsert(InsertConfig.for_site(vlm.site, layers=1, hidden=(16,)))
        train_method(vlm, PinMethod(insert), [], BoxCodec(8), steps=6, batch_size=4, lr=1e-2, seed=0,
                     checkpoint_dir=ckpt, checkpoint_every=2, log_every=1, live=live, fresh=fresh, compose_workers=0)
        return insert.state_dict()

    straight = run(tmp_path / "a")
    with pytest.raises(_Crash):
        run(tmp_path / "b", live=_CrashingLive(at=5))
    assert (tmp_path / "b" / "last.pt").exists()
    resumed = run(tmp_path / "b")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
