"""OpenAI's CLIP weights were trained with QuickGELU: the defaults build it, and an ``openai``
tag on a config that builds GELU is refused with the param's name (open_clip itself only warns)."""
from __future__ import annotations

import json

import open_clip
import pytest

from pin.errors import PinError
from pin.openclip_config import check_activation, open_clip_name
from pin.params import FilterParams, VLMParams
from pin.vlm.of_loader import OPENFLAMINGO_3B


def test_the_defaults_build_quickgelu_for_the_openai_weights():
    for model, pretrained in ((FilterParams().model, FilterParams().pretrained),
                              (VLMParams().clip_model, VLMParams().clip_pretrained),
                              (OPENFLAMINGO_3B.clip_model, OPENFLAMINGO_3B.clip_pretrained)):
        assert pretrained == "openai"
        assert open_clip.get_model_config(model)["quick_gelu"] is True, model
        check_activation(model, pretrained, "k.model", "k.pretrained")


def test_an_openai_tag_on_a_gelu_config_is_refused_naming_the_keys():
    with pytest.raises(PinError, match=r"filter\.model='ViT-L-14' builds GELU.*filter\.pretrained='openai'.*"
                                       r"ViT-L-14-quickgelu"):
        check_activation("ViT-L-14", "openai", "filter.model", "filter.pretrained")
    with pytest.raises(PinError, match=r"vlm\.clip_model"):
        check_activation("ViT-B-32", "OpenAI", "vlm.clip_model", "vlm.clip_pretrained")
    check_activation("ViT-L-14", "laion2b_s32b_b82k", "k", "k")  # trained with GELU: fine


def test_the_filter_refuses_before_loading_anything():
    from pin.synth.clip_score import ClipScorer

    with pytest.raises(PinError, match=r"filter\.model='ViT-L-14' builds GELU"):
        ClipScorer.from_pretrained("ViT-L-14", "openai", device="cpu")


def test_files_and_tiny_configs_are_not_checked(tmp_path):
    cfg = {"embed_dim": 8, "vision_cfg": {"image_size": 16, "layers": 1, "width": 16, "patch_size": 8},
           "text_cfg": {"context_length": 8, "vocab_size": 32, "width": 8, "heads": 1, "layers": 1}}
    path = tmp_path / "tiny-clip-act.json"
    path.write_text(json.dumps(cfg))
    name = open_clip_name(str(path), "filter.model")
    check_activation(name, "", "filter.model", "filter.pretrained")
    check_activation(name, str(tmp_path / "weights.bin"), "filter.model", "filter.pretrained")
    check_activation("ViT-L-14", str(tmp_path / "open_clip_pytorch_model.bin"), "k", "k")
