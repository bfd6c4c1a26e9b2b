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
