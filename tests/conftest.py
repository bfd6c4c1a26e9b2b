"""Shared test fixtures: tiny things built locally (no hub, no downloads)."""
import pytest


def _char_tokenizer(extra_special: tuple[str, ...] = ()):
    """A char-level fast tokenizer that prepends BOS like OPT's (the rehearsal's, so tests and
    the stand-ins agree): ids 0 <pad>, 1 </s> (bos=eos), 2 <unk>, ``extra_special``, printable ASCII."""
    from rehearsal.standins import char_tokenizer

    return char_tokenizer(extra_special)


@pytest.fixture(scope="session")
def make_char_tokenizer():
    """The builder, for tests that need extra special tokens (e.g. BLIP-2's ``<image>``)."""
    return _char_tokenizer


@pytest.fixture(scope="session")
def char_tokenizer():
    return _char_tokenizer()


TRAINED_METHODS = ("pin", "vpt_fusion", "vpt_vision", "coop_llm", "lora_vision")
# small baseline sizes for the tiny test VLMs (the paper's 100 VPT tokens would dwarf 16 patches)
TINY_BASELINES = {"vpt_tokens": 5, "coop_tokens": 3, "lora_r": 4, "lora_alpha": 4}


def frozen_state(module):
    """Every frozen tensor of ``module`` (cloned), named without peft's wrapper level; the LoRA
    weights themselves are left out."""
    return {k.replace(".base_layer", ""): v.detach().clone() for k, v in module.state_dict().items()
            if ".lora_" not in k}


def _train_method_steps(vlm, frozen_module, name, pixels, prompts, answers, steps=12, lr=1e-2, pin_hidden=(16, 16)):
    """Build method ``name`` on ``vlm`` and take ``steps`` Adam steps on one batch. Checks on the
    way: every trainable tensor gets a gradient and no VLM weight does, the VLM's weights are
    bit-identical afterwards, and outside the method the encoder gives its frozen features.
    Returns ``(method, losses)``."""
    import torch

    from pin.methods import build_method
    from pin.params import BaselinesParams, InsertParams

    before = frozen_state(frozen_module)
    frozen_feats = vlm.patch_features(pixels)
    torch.manual_seed(0)
    method = build_method(name, vlm, InsertParams(layers=len(pin_hidden), hidden=list(pin_hidden)),
                          BaselinesParams(**TINY_BASELINES))
    opt = torch.optim.Adam(method.trainable_parameters(), lr=lr)
    losses = []
    for step in range(steps):
        feats = method.features(vlm, pixels) if method.encodes_pixels else frozen_feats
        loss = vlm.answer_loss(feats, prompts, answers, **method())
        opt.zero_grad()
        loss.backward()
        if step == 0:
            grads = [p.grad for p in method.trainable_parameters()]
            assert all(g is not None for g in grads), name
            assert sum(float(g.abs().sum()) for g in grads) > 0, name
            assert all(p.grad is None for n, p in frozen_module.named_parameters() if ".lora_" not in n), name
        opt.step()
        losses.append(loss.item())
    after = frozen_state(frozen_module)
    assert before.keys() == after.keys(), name
    for k in before:
        assert torch.equal(before[k], after[k]), (name, k)
    assert torch.equal(vlm.patch_features(pixels), frozen_feats), name  # nothing left switched on
    return method, losses


@pytest.fixture(scope="session")
def train_method_steps():
    return _train_method_steps
