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
from pin.train import make_samples, train_insert  # noqa: E402
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


def _train(vlm, insert, images, ckpt, steps, live=None):
    return train_insert(vlm, insert, images, BoxCodec(8), steps=steps, batch_size=4, lr=1e-2, seed=0,
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
