"""open_clip model names in params: a registered name (``ViT-L-14``) or the path of an open_clip
model-config JSON (``/models/my-clip/my-clip.json``), so a model whose config open_clip does not
ship can be named without code (``filter.model``, ``vlm.clip_model``)."""
from __future__ import annotations

from pathlib import Path

from pin.errors import PinError


def open_clip_name(model: str, key: str) -> str:
    """The name open_clip knows ``model`` by. A ``.json`` path is registered first
    (``open_clip.add_model_config``; open_clip names it after the file's stem); ``key`` is the
    param named in errors."""
    if not model.endswith(".json"):
        return model
    import open_clip

    path = Path(model).expanduser()
    if not path.is_file():
        raise PinError(f"{key}={model!r}: no such open_clip model-config file")
    open_clip.add_model_config(path)
    if path.stem not in open_clip.list_models():  # open_clip skips a file without these keys, silently
        raise PinError(f"{key}={model!r}: not an open_clip model config "
                       "(a JSON object with embed_dim, vision_cfg and text_cfg)")
    return path.stem


def check_activation(name: str, pretrained: str, model_key: str, pretrained_key: str) -> None:
    """Refuse weights that open_clip knows were trained with another activation than the model
    config builds: OpenAI's CLIPs (tag ``openai``) use QuickGELU, ``ViT-L-14`` builds ``nn.GELU``,
    and open_clip only warns - OpenFlamingo's frozen features and the X-Paste CLIP threshold would
    then be off, silently. A file path or an unknown tag is not checked (nothing to compare)."""
    import open_clip

    tag = open_clip.get_pretrained_cfg(name, pretrained) if pretrained else {}
    if not tag:
        return
    wants = bool(tag.get("quick_gelu", False))
    builds = bool((open_clip.get_model_config(name) or {}).get("quick_gelu", False))
    if wants != builds:
        act = lambda quick: "QuickGELU" if quick else "GELU"  # noqa: E731
        hint = f"{name}-quickgelu" if wants and f"{name}-quickgelu" in open_clip.list_models() else "a matching config"
        raise PinError(f"{model_key}={name!r} builds {act(builds)}, but {pretrained_key}={pretrained!r} was trained "
                       f"with {act(wants)}: use {hint}")
