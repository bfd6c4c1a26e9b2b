"""PIN and the paper's baselines (pin.methods) on a tiny mini VLM: each trains only its own
parameters, leaves the VLM bit-identical, lowers the loss, reports its parameter count, and
saves/loads; the train loop runs the cached and the pixel path; the params name their keys."""
from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

from conftest import TINY_BASELINES, TRAINED_METHODS  # noqa: E402
from pin import params  # noqa: E402
from pin.boxes import BoxCodec  # noqa: E402
from pin.composed import ComposedImage, ComposedObject  # noqa: E402
from pin.errors import PinError  # noqa: E402
from pin.methods import METHODS, build_method, load_method  # noqa: E402
from pin.params import BaselinesParams, InsertParams, ParamsError  # noqa: E402
from pin.train import train_method  # noqa: E402
from pin.vlm.mini import MiniVLMConfig, build_mini_flamingo  # noqa: E402
from pin.vlm.openflamingo import OpenFlamingoAdapter  # noqa: E402

CFG = MiniVLMConfig(vision_width=32, vision_layers=1, vision_heads=2, lm_width=32, lm_layers=2, lm_heads=2,
                    perceiver_depth=1, perceiver_latents=8, perceiver_heads=2, perceiver_dim_head=16,
                    xattn_heads=2, xattn_dim_head=16, gate_init=1.0, stem="conv")  # conv stem: BatchNorm inside
PROMPTS = ["dog", "cup", "dog", "cup"]
ANSWERS = [" [0,0,4,4]", " [2,2,6,8]", " [1,1,3,3]", " [0,4,8,8]"]

# trainable parameters of each method on CFG (vision width 32, 1 block, MLP 128; LM width 32) with
# TINY_BASELINES and PIN hidden (16, 16):
EXPECTED_PARAMS = {
    # swiglu psi: FC 64->32 (2080) + LN(32) (64), FC 16->32 (544) + LN (64), Linear 16->32 (544)
    "pin": 2080 + 64 + 544 + 64 + 544,
    "vpt_fusion": 5 * 32,  # 5 tokens of the vision width
    "vpt_vision": 5 * 32,
    "coop_llm": 3 * 32,  # 3 tokens of the LM width
    # r=4 on q/k/v (in_proj 32->96), c_fc (32->128) and c_proj (128->32): r * (in + out) each
    "lora_vision": 4 * (32 + 96) + 4 * (32 + 128) + 4 * (128 + 32),
}


def fresh_vlm(state: dict | None = None) -> OpenFlamingoAdapter:
    flamingo, proc, tok = build_mini_flamingo(CFG, ["dog", "cup"])
    if state is not None:
        flamingo.load_state_dict(state)
    return OpenFlamingoAdapter(flamingo, proc, tok, name="mini")


def pixels(n=4, seed=0):
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def taught() -> dict:
    """Weights of a tiny mini VLM whose fusion network and LM (not its vision tower) were trained
    to answer ANSWERS[i] for image i: a random LM barely reads its image (every method moves its
    loss by < 1%), a pretrained one does, as the paper's methods assume. The methods then have
    to make *new* images read as the taught ones."""
    from pin.vlm.mini import trainable_for_pretraining

    vlm = fresh_vlm()
    feats = vlm.patch_features(pixels())
    groups = trainable_for_pretraining(vlm.flamingo)
    trained = groups["perceiver"] + groups["xattn"] + groups["lm"]
    for p in trained:
        p.requires_grad_(True)
    opt = torch.optim.Adam(trained, lr=3e-3)
    for _ in range(300):
        opt.zero_grad()
        loss = vlm.answer_loss(feats, [vlm.prompt(o) for o in PROMPTS], ANSWERS)
        loss.backward()
        opt.step()
        if loss.item() < 0.02:
            break
    assert loss.item() < 0.02
    return {k: v.detach().clone() for k, v in vlm.flamingo.state_dict().items()}


def build(name, vlm):
    torch.manual_seed(0)
    return build_method(name, vlm, InsertParams(layers=2, hidden=[16, 16]), BaselinesParams(**TINY_BASELINES))


@pytest.mark.parametrize("name", TRAINED_METHODS)
def test_method_trains_only_itself(name, taught, train_method_steps):
    vlm = fresh_vlm(taught)
    new_images = pixels(seed=11)
    method, losses = train_method_steps(vlm, vlm.flamingo, name, new_images, [vlm.prompt(o) for o in PROMPTS],
                                        ANSWERS, steps=20)
    assert method.n_trainable_params == EXPECTED_PARAMS[name]
    # measured: pin 1.68 -> 0.40, vpt_fusion 1.26 -> 0.80, vpt_vision 1.68 -> 1.52, coop_llm
    # 1.59 -> 1.51, lora_vision 1.68 -> 0.52
    assert losses[-1] < 0.97 * losses[0], losses


@pytest.mark.parametrize("name", TRAINED_METHODS)
def test_save_and_load_gives_the_same_answers(name, tmp_path, train_method_steps):
    vlm = fresh_vlm()
    method, _ = train_method_steps(vlm, vlm.flamingo, name, pixels(), [vlm.prompt(o) for o in PROMPTS], ANSWERS,
                                   steps=3)
    method.save_pretrained(tmp_path / "m")
    other = fresh_vlm()  # same seed: the same frozen VLM, without the trained method
    loaded = load_method(tmp_path / "m", other)
    assert type(loaded) is type(method) and loaded.n_trainable_params == method.n_trainable_params
    assert type(method).build(fresh_vlm(), **method.config()).config() == method.config()

    def loss(vlm, m):
        with torch.no_grad():
            feats = m.features(vlm, pixels()) if m.encodes_pixels else vlm.patch_features(pixels())
            return vlm.answer_loss(feats, [vlm.prompt(o) for o in PROMPTS], ANSWERS, **m())

    assert torch.equal(loss(vlm, method), loss(other, loaded))


def test_untrained_methods():
    vlm = fresh_vlm()
    for name in ("raw", "random", "incontext"):
        m = build(name, vlm)
        assert not m.trains and m.n_trainable_params == 0 and m() == {}
    assert build("incontext", vlm).config() == {"shots": [2, 5, 10], "repeats": 10}


def test_vpt_vision_tokens_join_the_sequence_inside_the_encoder_only():
    vlm = fresh_vlm()
    method = build("vpt_vision", vlm)
    assert method.keep  # the authors' default: the prompts' outputs join the fusion input
    lengths = []
    handle = vlm.vision_blocks[0].register_forward_hook(lambda _m, _a, out: lengths.append(out.shape[1]))
    frozen = vlm.patch_features(pixels(2))
    with torch.no_grad():
        prompted = method.features(vlm, pixels(2))
    handle.remove()
    n_pos = vlm.site.n_positions
    assert lengths == [n_pos + 1, n_pos + 1 + 5]  # frozen pass (+ CLS), then the 5 prompt tokens inside
    assert prompted.shape == (2, n_pos + 5, frozen.shape[2])  # patches first, then the 5 prompts' outputs
    assert not torch.allclose(prompted[:, :n_pos], frozen)
    assert torch.equal(vlm.patch_features(pixels(2)), frozen)  # hooks gone
    with torch.no_grad():  # the perceiver reads all of them: the prompts' outputs change the answer
        assert not torch.allclose(vlm.fuse(prompted), vlm.fuse(prompted[:, :n_pos]))

    dropped = build_method("vpt_vision", vlm, InsertParams(),
                           BaselinesParams(**TINY_BASELINES, vpt_vision_output="drop"))
    with torch.no_grad():
        dropped.tokens.copy_(method.tokens)
        out = dropped.features(vlm, pixels(2))
    assert out.shape == frozen.shape and torch.allclose(out, prompted[:, :n_pos], atol=1e-6)
    assert dropped.config() == {"tokens": 5, "keep": False}


def test_untrained_lora_is_the_frozen_encoder_and_is_off_outside():
    vlm = fresh_vlm()
    frozen = vlm.patch_features(pixels(2))
    method = build("lora_vision", vlm)
    with torch.no_grad():
        assert torch.equal(method.features(vlm, pixels(2)), frozen)  # B = 0 at init
        for p in method.trainable_parameters():
            p.add_(0.1)
        assert not torch.allclose(method.features(vlm, pixels(2)), frozen)
    assert torch.equal(vlm.patch_features(pixels(2)), frozen)
    with pytest.raises(ValueError, match="already holds LoRA"):
        build("lora_vision", vlm)


def _image(i: int) -> ComposedImage:
    buf = io.BytesIO()
    Image.new("RGB", (224, 224), ((50 * i) % 255, 100, 200)).save(buf, format="PNG")
    obj = ComposedObject("dog" if i % 2 else "cup", (28 * (i % 4), 28, 28 * (i % 4) + 56, 112),
                         (i % 4, 1, i % 4 + 2, 4), "dog" if i % 2 else "cup")
    return ComposedImage(i, buf.getvalue(), 224, 224, (obj,))


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


@pytest.mark.parametrize("name", ["vpt_fusion", "lora_vision"])  # cached features / the encoder in the graph
def test_train_loop_runs_each_path_and_resumes(name, tmp_path, capsys):
    images = [_image(i) for i in range(6)]

    def run(ckpt, steps, live=None):
        vlm = fresh_vlm()
        method = build(name, vlm)
        before = {k: v.clone() for k, v in vlm.flamingo.vision_encoder.conv1.state_dict().items()}
        try:
            result = train_method(vlm, method, images, BoxCodec(8), steps=steps, batch_size=3, lr=1e-2, seed=0,
                                  checkpoint_dir=ckpt, checkpoint_every=2, log_every=1, val_images=images[:3],
                                  live=live)
        finally:
            after = vlm.flamingo.vision_encoder.conv1.state_dict()
            assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm stats: encoder in eval
        return method, result

    straight, result = run(tmp_path / "a", 4)
    assert result.trainable_params == EXPECTED_PARAMS[name] and result.steps == 4 and result.val_loss is not None
    with pytest.raises(_Crash):
        run(tmp_path / "b", 4, live=_CrashingLive(at=3))
    assert (tmp_path / "b" / "last.pt").exists()  # the step-2 checkpoint
    capsys.readouterr()
    resumed, _ = run(tmp_path / "b", 4)
    assert "resuming from step 2" in capsys.readouterr().out
    for (ka, a), (kb, b) in zip(straight.trainable_state().items(), resumed.trainable_state().items()):
        assert ka == kb and torch.equal(a, b), ka


def test_untrained_method_cannot_be_trained(tmp_path):
    vlm = fresh_vlm()
    with pytest.raises(ValueError, match="trains nothing"):
        train_method(vlm, build("raw", vlm), [_image(0)], BoxCodec(8), steps=1, batch_size=1, lr=1e-2, seed=0,
                     checkpoint_dir=tmp_path)


def test_load_errors(tmp_path):
    vlm = fresh_vlm()
    with pytest.raises(PinError, match="dvc repro train"):
        load_method(tmp_path / "none", vlm)
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text('{"method": "magic"}')
    with pytest.raises(PinError, match="unknown method 'magic'"):
        load_method(tmp_path / "odd", vlm)


def test_method_params_name_their_keys():
    assert params.parse_method({}, METHODS) == "pin"
    assert params.parse_method({"method": "lora_vision"}, METHODS) == "lora_vision"
    with pytest.raises(ParamsError, match=r"^method: must be one of pin, .*got 'vpt'"):
        params.parse_method({"method": "vpt"}, METHODS)
    with pytest.raises(ParamsError, match=r"^method: .*got \['pin'\]"):
        params.parse_method({"method": ["pin"]}, METHODS)
    with pytest.raises(ParamsError, match=r"baselines\.incontext_shots"):
        params.parse_section("baselines", {"incontext_shots": [2, 0]})
    with pytest.raises(ParamsError, match=r"baselines\.lora_r"):
        params.parse_section("baselines", {"lora_r": 0})
    with pytest.raises(ParamsError, match=r"baselines\.vpt_token: unknown key"):
        params.parse_section("baselines", {"vpt_token": 10})
    with pytest.raises(ParamsError, match=r"vlm\.image_size"):
        params.parse_section("vlm", {"image_size": 2})
    assert params.parse_method(params.load_yaml("params.yaml"), METHODS) == "pin"  # the committed default


def test_every_method_is_built_from_params_by_its_own_class():
    # one registry, one from_params per class: the sizes in params reach the built method
    vlm = fresh_vlm()
    pin_p = InsertParams(layers=1, hidden=[8])
    base_p = BaselinesParams(vpt_tokens=4, coop_tokens=2, lora_r=2, lora_alpha=3, incontext_shots=[1, 3],
                             incontext_repeats=2)
    want = {"pin": {"layers": 1, "hidden": [8]}, "vpt_fusion": {"tokens": 4}, "vpt_vision": {"tokens": 4},
            "coop_llm": {"tokens": 2}, "lora_vision": {"r": 2, "alpha": 3}, "incontext": {"shots": [1, 3], "repeats": 2},
            "raw": {}, "random": {}}
    assert set(want) == set(METHODS)
    for name, cls in METHODS.items():
        assert cls.name == name
        assert "from_params" in vars(cls) or not want[name], f"{name} has sizes but no from_params of its own"
        method = build_method(name, fresh_vlm() if name == "lora_vision" else vlm, pin_p, base_p)
        assert type(method) is cls
        got = method.config()
        assert {k: got[k] for k in want[name]} == want[name], name
    with pytest.raises(PinError, match=r"method: unknown method 'vpt'"):
        build_method("vpt", vlm, pin_p, base_p)


def test_saved_grid_is_read_back(tmp_path):
    from pin.methods import saved_grid

    vlm = fresh_vlm()
    build("coop_llm", vlm).save_pretrained(tmp_path / "coop", grid=14)
    build("pin", vlm).save_pretrained(tmp_path / "pin", grid=8)
    build("pin", vlm).save_pretrained(tmp_path / "old")  # as saved before grids were recorded
    assert (saved_grid(tmp_path / "coop"), saved_grid(tmp_path / "pin"), saved_grid(tmp_path / "old")) == (14, 8, None)
    assert saved_grid(tmp_path / "nowhere") is None
    assert load_method(tmp_path / "pin", vlm).name == "pin"  # the extra key does not disturb loading
