"""Offline guarantee. With the default params every stage runs with network access refused (any
IPv4/IPv6 connect or DNS lookup fails the test); with the paper profile and no hub access, the
error names the model id and the param or environment variable that points at local weights.

The stages run through their entry points (``stages/<stage>.py``) in-process on tiny data.
``scripts/kill_anywhere.py`` checks the same for ``dvc repro`` itself, in subprocesses.
"""
from __future__ import annotations

import socket

import pytest
import torch

from stage_runner import run_entry, write_params

torch.set_num_threads(1)


class NetworkUsed(AssertionError):
    pass


@pytest.fixture()
def no_network(monkeypatch):
    """Refuse (and record) every IPv4/IPv6 connection and DNS lookup made in this process."""
    attempts: list[str] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refuse(what: str):
        attempts.append(what)
        raise NetworkUsed(f"network access attempted: {what}")

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse(f"connect {address!r}")
        return real_connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse(f"connect_ex {address!r}")
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(f"create_connection {address!r}"))
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: refuse(f"getaddrinfo {host!r}"))
    return attempts


@pytest.fixture()
def hub_offline(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1 and an empty Hugging Face cache, also for modules imported earlier."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    try:
        import huggingface_hub.constants as hf

        monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf/hub"))
    except ImportError:  # pragma: no cover - a dependency of transformers
        pass


TINY = {
    "generate": {"max_categories": 2, "per_category": 4, "image_size": 48},
    "filter": {"min_per_class": 1},
    "compose": {"image_size": 112, "n_train": 16, "n_val": 8, "n_heldout": 8, "n_pretrain": 16,
                "shard_size": 8, "workers": 1},
    "pretrain": {"source": "train", "vision_steps": 2, "lm_steps": 2, "batch_size": 4, "vision_width": 32, "vision_layers": 1,
                 "lm_width": 32, "lm_layers": 2},
    "train": {"steps": 2, "batch_size": 4, "checkpoint_every": 1, "log_every": 1},
    "eval": {"max_queries": 4, "batch_size": 4, "random_draws": 1, "gallery_size": 2},
}


def test_default_pipeline_opens_no_connection(tmp_path, no_network):
    write_params(tmp_path, **TINY)
    for stage, args in (("generate", ()), ("filter", ()), ("compose", ()), ("pretrain_vlm", ()),
                        ("train", ()), ("evaluate", ("synthetic",))):
        code, err, out = run_entry(stage, tmp_path, *args)
        assert code == 0, (stage, err, out)
        assert "done in" in out, (stage, out)
    assert no_network == []
    assert (tmp_path / "metrics/eval/synthetic.json").is_file()


# the paper profile, no weights anywhere, no hub: (stage, params, what the one-line error must name)
PAPER = [
    ("generate", {"generate": {"backend": "diffusers", "max_categories": 1}},
     ["'stable-diffusion-v1-5/stable-diffusion-v1-5'", "generate.model", "HF_HUB_OFFLINE=1"]),
    ("filter", {"filter": {"backend": "open_clip"}},
     ["filter.model='ViT-L-14-quickgelu'", "filter.pretrained='openai'", "HF_HOME", "HF_HUB_OFFLINE=1"]),
    ("train", {"vlm": {"name": "openflamingo"}},
     ["openflamingo/OpenFlamingo-3B-vitl-mpt1b-langinstruct", "anas-awadalla/mpt-1b-redpajama-200b-dolly",
      "vlm.checkpoint", "vlm.lang_model"]),
    ("train", {"vlm": {"name": "blip2"}},
     ["'Salesforce/blip2-opt-2.7b'", "vlm.blip2_model", "HF_HOME", "HF_HUB_OFFLINE=1"]),
]


@pytest.mark.parametrize("stage, overrides, names", PAPER, ids=["diffusers", "open_clip", "openflamingo", "blip2"])
def test_paper_profile_without_weights_says_where_to_point(tmp_path, no_network, hub_offline, stage, overrides, names):
    write_params(tmp_path, **overrides)
    if stage == "filter":  # the filter reads the generate stage's output first
        from pin.synth.filter import write_object_fixture

        write_object_fixture(tmp_path / "data/objects", {"dog": "train"}, per_category=2)
    code, err, _ = run_entry(stage, tmp_path)
    assert code == 1, err
    assert len(err) == 1 and err[0].startswith(f"[{stage}] error: "), err  # one line, nothing else
    for name in names:
        assert name in err[0], (name, err[0])
    assert no_network == []
