"""The PIN training loop: only the insert changes, and an interrupted run resumes exactly."""
from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

from pin.boxes import BoxCodec  # noqa: E402
from pin.composed import ComposedImage, ComposedObject  # noqa: E402
from pin.insert import InsertConfig, PositionalInsert  # noqa: E402
from pin.methods.pin_method import PinMethod  # noqa: E402
from pin.train import make_samples, train_method  # noqa: E402
from pin.vlm.mini import MiniVLMConfig, build_mini_flamingo  # noqa: E402
from pin.vlm.openflamingo import OpenFlamingoAdapter  # noqa: E402

CFG = MiniVLMConfig(vision_width=32, vision_layers=1, vision_heads=2, lm_width=32, lm_layers=2, lm_heads=2,
                    perceiver_depth=1, perceiver_latents=8, perceiver_heads=2, perceiver_dim_head=16,
                    xattn_heads=2, xattn_dim_head=16, gate_init=1.0)


def _image(i: int) -> ComposedImage:
    colour = ((50 * i) % 255, 100, 200)
    buf = io.BytesIO()
    Image.new("RGB", (224, 224), colour).save(buf, format="PNG")
    obj = ComposedObject("dog" if i % 2 else "cup", (28 * (i % 4), 28, 28 * (i % 4) + 56, 112),
                         (i % 4, 1, i % 4 + 2, 4), "dog" if i % 2 else "cup")
    return ComposedImage(i, buf.getvalue(), 224, 224, (obj,))


@pytest.fixture()
def setup():
    flamingo, proc, tok = build_mini_flamingo(CFG, ["dog", "cup"])
    vlm = OpenFlamingoAdapter(flamingo, proc, tok, name="mini")
    torch.manual_seed(0)
    insert = PositionalInsert(InsertConfig.for_site(vlm.site, layers=1, hidden=(16,)))
    return vlm, insert, [_image(i) for i in range(8)]


def train_pin(vlm, insert, images, codec, **kwargs):
    return train_method(vlm, PinMethod(insert), images, codec, **kwargs)


def _train(vlm, insert, images, ckpt, steps, live=None):
    return train_pin(vlm, insert, images, BoxCodec(8), steps=steps, batch_size=4, lr=1e-2, seed=0,
                        checkpoint_dir=ckpt, checkpoint_every=2, log_every=1, live=live)


def test_batches_depend_on_seed_and_step_only():
    images = [_image(i) for i in range(8)]
    a = make_samples(images, BoxCodec(8), 123, 6)
    assert a == make_samples(images, BoxCodec(8), 123, 6)
    assert a != make_samples(images, BoxCodec(8), 124, 6)
    assert all(s.answer.startswith(" [") and s.answer.endswith("]") for s in a)


def test_only_the_insert_trains(setup, tmp_path):
    vlm, insert, images = setup
    before = {k: v.clone() for k, v in vlm.flamingo.state_dict().items()}
    start = [p.detach().clone() for p in insert.parameters()]
    result = _train(vlm, insert, images, tmp_path / "ckpt", steps=3)
    after = vlm.flamingo.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not torch.equal(a, p) for a, p in zip(start, insert.parameters()))
    assert result.trainable_params == sum(p.numel() for p in insert.parameters())


class _Crash(RuntimeError):
    pass


class _CrashingLive:
    """Stands in for dvclive; dies after a given step, as a killed process would."""

    def __init__(self, at: int):
        self.at, self.step = at, 0

    def log_metric(self, *_):
        pass

    def next_step(self):
        if self.step >= self.at:
            raise _Crash


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    def fresh():
        flamingo, proc, tok = build_mini_flamingo(CFG, ["dog", "cup"])
        vlm = OpenFlamingoAdapter(flamingo, proc, tok, name="mini")
        torch.manual_seed(0)
        return vlm, PositionalInsert(InsertConfig.for_site(vlm.site, layers=1, hidden=(16,)))

    images = [_image(i) for i in range(8)]
    vlm, straight = fresh()
    _train(vlm, straight, images, tmp_path / "a", steps=6)

    vlm, resumed = fresh()
    with pytest.raises(_Crash):
        _train(vlm, resumed, images, tmp_path / "b", steps=6, live=_CrashingLive(at=5))
    assert (tmp_path / "b" / "last.pt").exists()  # the step-4 checkpoint
    vlm, resumed = fresh()
    _train(vlm, resumed, images, tmp_path / "b", steps=6)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


class _RecordingLive:
    """Records what dvclive would write: (step, name, value)."""

    def __init__(self, crash_at: int | None = None):
        self.step, self.rows, self.crash_at = 0, [], crash_at

    def log_metric(self, name, value):
        self.rows.append((self.step, name, value))

    def next_step(self):
        if self.crash_at is not None and self.step >= self.crash_at:
            raise _Crash


def _fresh():
    flamingo, proc, tok = build_mini_flamingo(CFG, ["dog", "cup"])
    vlm = OpenFlamingoAdapter(flamingo, proc, tok, name="mini")
    torch.manual_seed(0)
    return vlm, PositionalInsert(InsertConfig.for_site(vlm.site, layers=1, hidden=(16,)))


def test_resume_restores_loss_ema_rng_and_the_logged_curves(tmp_path):
    images = [_image(i) for i in range(8)]
    vlm, straight = _fresh()
    live_a = _RecordingLive()
    torch.manual_seed(123)
    res_a = _train(vlm, straight, images, tmp_path / "a", steps=6, live=live_a)
    after_a = torch.rand(3)  # the torch RNG after the run

    vlm, resumed = _fresh()
    with pytest.raises(_Crash):
        _train(vlm, resumed, images, tmp_path / "b", steps=6, live=_RecordingLive(crash_at=5))
    vlm, resumed = _fresh()
    live_b = _RecordingLive()  # a fresh log, as dvc deletes the killed run's
    torch.manual_seed(999)  # whatever the new process's RNG: the checkpoint's is restored
    res_b = _train(vlm, resumed, images, tmp_path / "b", steps=6, live=live_b)
    assert res_b.final_loss == res_a.final_loss  # the loss EMA came back with the checkpoint
    assert live_b.rows == live_a.rows  # steps 1..6, each once
    assert {n for _, n, _ in live_a.rows} == {"train/loss", "train/loss_ema", "train/lr"}  # no wall-clock series
    assert torch.equal(torch.rand(3), after_a)


def test_checkpoint_of_another_run_is_ignored(tmp_path):
    images = [_image(i) for i in range(8)]
    vlm, insert = _fresh()
    with pytest.raises(_Crash):
        train_pin(vlm, insert, images, BoxCodec(8), steps=6, batch_size=4, lr=1e-2, seed=0,
                     checkpoint_dir=tmp_path / "c", checkpoint_every=2, live=_CrashingLive(at=5), fingerprint="lr=1e-2")
    assert (tmp_path / "c" / "last.pt").exists()
    (tmp_path / "c" / ".ckpt.6.tmp").write_bytes(b"half a checkpoint")  # a save cut off by a kill
    vlm, other = _fresh()
    train_pin(vlm, other, images, BoxCodec(8), steps=6, batch_size=4, lr=5e-3, seed=0,
                 checkpoint_dir=tmp_path / "c", checkpoint_every=2, fingerprint="lr=5e-3")
    vlm, straight = _fresh()
    train_pin(vlm, straight, images, BoxCodec(8), steps=6, batch_size=4, lr=5e-3, seed=0,
                 checkpoint_dir=tmp_path / "d", checkpoint_every=2, fingerprint="lr=5e-3")
    for a, b in zip(straight.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    assert not (tmp_path / "c" / ".ckpt.6.tmp").exists()


def test_unreadable_checkpoint_starts_over(tmp_path, capsys):
    from pin.train import Checkpointer

    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    assert Checkpointer(tmp_path, "x").load() is None
    assert "unreadable checkpoint" in capsys.readouterr().out
    assert not (tmp_path / "last.pt").exists()


def test_feature_cache_changes_speed_not_results(tmp_path):
    # train.cache_features=false runs the frozen encoder inside every step; on the CPU (fp32) the
    # cached rows are the same numbers, so the trained insert must be identical.
    results = []
    for cache in (True, False):
        vlm, insert = _fresh()
        images = [_image(i) for i in range(8)]
        r = train_pin(vlm, insert, images, BoxCodec(8), steps=3, batch_size=4, lr=1e-2, seed=0,
                         checkpoint_dir=tmp_path / f"ckpt{cache}", checkpoint_every=10, log_every=1,
                         cache_features=cache)
        results.append((r.final_loss, [p.detach().clone() for p in insert.parameters()]))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))


def _write_split(folder, images):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    rows = [{"image_id": im.image_id, "image": im.image, "width": im.width, "height": im.height,
             "objects": [{"category": o.category, "box": list(o.box), "grid_box": list(o.grid_box),
                          "referral": o.referral} for o in im.objects]} for im in images]
    pq.write_table(pa.Table.from_pylist(rows), folder / "part-00000.parquet")


def test_run_train_on_built_components_writes_the_same_bytes_twice(tmp_path):
    import json

    from pin.params import TrainParams
    from pin.train import run_train

    composed = tmp_path / "composed"
    _write_split(composed / "train", [_image(i) for i in range(8)])
    _write_split(composed / "val", [_image(i) for i in range(8, 12)])
    train_p = TrainParams(steps=3, batch_size=4, lr=1e-2, checkpoint_every=2, log_every=1)

    def run(tag):
        vlm, insert = _fresh()
        out = tmp_path / tag
        summary = run_train(train_p, vlm, PinMethod(insert), 8, composed_dir=str(composed), out_dir=str(out / "pin"),
                            metrics_path=str(out / "train.json"), live_dir=str(out / "live"),
                            timing_path=str(tmp_path / f"timing_{tag}.json"))
        assert "samples/s" in summary  # the throughput is reported on the stage's line...
        return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    first, second = run("a"), run("b")
    assert first == second  # ...and nowhere in what the stage writes: a rerun changes no byte
    metrics = json.loads(first["train.json"])
    assert set(metrics) == {"steps", "final_loss", "val_loss", "trainable_params", "method", "vlm", "insert_layers",
                            "n_train_images"}
    assert (metrics["method"], metrics["steps"], metrics["insert_layers"], metrics["n_train_images"]) == ("pin", 3, 1, 8)
    assert json.loads(first["pin/config.json"])["grid"] == 8  # the CLI reads it back instead of guessing
    assert not any("samples_per_s" in name for name in first)
    timing = json.loads((tmp_path / "timing_a.json").read_text())["train"]
    assert timing["seconds"] > 0 and timing["samples_per_s"] > 0
