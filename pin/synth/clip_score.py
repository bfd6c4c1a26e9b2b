"""CLIP image-text scores for the object filter (X-Paste recipe, paper profile).

score = 100 * cosine(image embedding of the object composited on white, text embedding of
"a photo of a {name}"). The scorer takes an already-built open_clip model, its preprocess
transform and tokenizer, so tests can inject a tiny random-weight model; ``from_pretrained`` is
the loader the filter stage uses.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from pin.errors import PinError

TEMPLATE = "a photo of a {name}"


def on_white(image: Image.Image) -> Image.Image:
    """Composite an RGBA object on a white background (the X-Paste re-scoring view)."""
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


class ClipScorer:
    """Batched, no-grad CLIP scores of RGBA objects against their category names."""

    def __init__(
        self,
        model,
        preprocess: Callable[[Image.Image], "object"],
        tokenizer: Callable[[list[str]], "object"],
        *,
        device: str = "cpu",
        batch_size: int = 32,
        template: str = TEMPLATE,
        name: str = "custom",
    ):
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        self.template = template
        self.name = name
        self._text_cache: dict[str, np.ndarray] = {}

    @classmethod
    def from_pretrained(
        cls, model: str, pretrained: str, *, device: str | None = None, batch_size: int = 32
    ) -> "ClipScorer":
        """Load an open_clip model; any failure becomes a PinError that says how to fix it.

        ``pretrained`` is an open_clip tag (``openai``, downloaded to / read from the HF cache) or
        the path of a local checkpoint file (``open_clip_pytorch_model.bin`` / ``.safetensors``);
        ``model`` an open_clip model name or the path of a model-config JSON.
        """
        try:
            import open_clip
            import torch
        except ImportError as err:  # pragma: no cover - a dependency of the project
            raise PinError(f"filter.backend=open_clip needs open-clip-torch: {err}") from None
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        import logging

        from pin.openclip_config import check_activation, open_clip_name

        name = open_clip_name(model, "filter.model")  # a path to a model-config JSON is registered first
        check_activation(name, pretrained, "filter.model", "filter.pretrained")
        quiet = logging.root.manager.disable
        logging.disable(logging.ERROR)  # open_clip logs its failure too: the user gets one line, ours
        try:
            net, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, device=device
            )
            tokenizer = open_clip.get_tokenizer(name)
        except Exception as err:  # noqa: BLE001 - every load failure gets the same advice
            local = os.path.isfile(pretrained)
            raise PinError(
                f"could not load CLIP weights filter.model={model!r} filter.pretrained={pretrained!r}"
                f" ({type(err).__name__}: {str(err)[:300]}). "
                + ("" if local else "No network/hub here? ")
                + "Point filter.pretrained at a local checkpoint file (e.g. -S "
                "filter.pretrained=/path/to/open_clip_pytorch_model.bin), or put the weights in "
                "the Hugging Face cache (HF_HOME) and set HF_HUB_OFFLINE=1, or use "
                "filter.backend=none (mask checks only)."
            ) from None
        finally:
            logging.disable(quiet)
        return cls(net, preprocess, tokenizer, device=device, batch_size=batch_size,
                   name=f"open_clip {model}/{pretrained}")

    def _text_features(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        import torch

        todo = sorted({n for n in names if n not in self._text_cache})
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            tokens = self.tokenizer([self.template.format(name=n) for n in chunk]).to(self.device)
            with torch.no_grad():
                feats = self.model.encode_text(tokens).float()
                feats = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            for n, f in zip(chunk, feats.cpu().numpy()):
                self._text_cache[n] = f
        return {n: self._text_cache[n] for n in names}

    def score(self, images: Sequence[Image.Image], names: Sequence[str]) -> np.ndarray:
        """100 * cosine similarity per (image, name) pair; images are RGBA objects."""
        import torch

        if len(images) != len(names):
            raise ValueError("images and names must have the same length")
        if not images:
            return np.zeros(0, dtype=np.float64)
        text = self._text_features(names)
        out = np.empty(len(images), dtype=np.float64)
        for start in range(0, len(images), self.batch_size):
            batch = images[start:start + self.batch_size]
            pixels = torch.stack([self.preprocess(on_white(im)) for im in batch]).to(self.device)
            with torch.no_grad():
                feats = self.model.encode_image(pixels).float()
                feats = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            feats = feats.cpu().numpy()
            tvec = np.stack([text[n] for n in names[start:start + len(batch)]])
            out[start:start + len(batch)] = 100.0 * np.sum(feats * tvec, axis=1)
        return out
