"""The one small interface every frozen VLM offers to training and evaluation.

PIN touches the VLM at one place: the patch features after the frozen vision encoder and before
the fusion network (OpenFlamingo's perceiver, BLIP-2's Q-Former). ``patch_features`` computes
them (no grad, cacheable: the encoder is frozen), the other calls take them back with an
optional additive insert.

The paper's baselines (``pin.methods``) need a few more places, offered here as extension points
that never change a VLM weight:

* ``fusion_tokens`` (VPT on the fusion network): learnable tokens appended to the patch features;
* ``lm_prefix`` (CoOp on the LLM): learnable embeddings at the start of the prompt text, right
  after the image (and after BOS for an LM that starts with one);
* ``vision_tokens`` / ``vision_blocks`` / ``vision_encoder`` / ``lora_targets`` (VPT and LoRA on
  the vision encoder): the encoder run *with* gradients, its transformer blocks (for hooks that
  add prompt tokens to the sequence) and the module and layer names LoRA wraps;
* several images per prompt (in-context learning, OpenFlamingo only): features of shape
  ``(B, T, n_positions, width)`` with ``T`` ``<image>`` tokens in each prompt.
"""
from __future__ import annotations

import re
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from PIL import Image

from pin.errors import PinError


@dataclass(frozen=True)
class InsertSite:
    """Where the insert is added: ``n_positions`` tokens of width ``width`` (CLS included if any)."""

    n_positions: int
    width: int
    grid: int  # PATCH grid side (n_positions == grid*grid (+1 when has_cls)); the box grid may differ
    has_cls: bool = False


class FrozenVLM(ABC):
    """Adapter around a frozen caption-based VLM. Every VLM weight has requires_grad=False."""

    name: str
    site: InsertSite
    prompt_template: str  # e.g. "<image>In the image is a {obj} located at"
    answer_end: str  # appended to the box text when teacher forcing, e.g. "<|endofchunk|>"

    @abstractmethod
    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """PIL images -> pixel tensor (B, C, H, W) in the encoder's own resolution/normalisation."""

    @abstractmethod
    def vision_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """The vision encoder's output tokens (B, n_positions, width) WITH autograd: the weights
        stay frozen, but gradients reach whatever a method adds inside the encoder."""

    def patch_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Frozen vision encoder output (B, n_positions, width), computed without grad."""
        with torch.no_grad():
            return self.vision_tokens(pixels)

    @property
    @abstractmethod
    def vision_encoder(self) -> torch.nn.Module:
        """The vision encoder module (what LoRA wraps)."""

    @property
    @abstractmethod
    def vision_blocks(self) -> torch.nn.ModuleList:
        """The encoder's transformer blocks; each takes and returns a batch-first token sequence
        (B, L, width) as its first argument / its output, with the CLS token at index 0."""

    @property
    @abstractmethod
    def lora_targets(self) -> dict[str, list[str]]:
        """``peft.LoraConfig`` targets inside ``vision_encoder``: ``target_modules`` (Linear
        layers) and ``target_parameters`` (weights used without a Linear's forward)."""

    @property
    @abstractmethod
    def lm_input_embeddings(self) -> torch.nn.Embedding:
        """The language model's (frozen) token embedding table."""

    @property
    def lm_width(self) -> int:
        """Width of the language model's input embeddings (the size of an ``lm_prefix`` row)."""
        return self.lm_input_embeddings.embedding_dim

    supports_interleaved_images: bool = False  # several <image>s per prompt (in-context learning)

    @abstractmethod
    def answer_loss(
        self,
        features: torch.Tensor,
        prompts: list[str],
        answers: list[str],
        insert: torch.Tensor | None = None,
        *,
        fusion_tokens: torch.Tensor | None = None,
        lm_prefix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean next-token cross-entropy over the answer tokens only (prompt masked, end token
        included), with ``features + insert`` (added in fp32) fed to the fusion network.

        ``answers`` are bare box texts (" [14,28,112,98]"); the adapter appends ``answer_end``.
        ``fusion_tokens`` (n, width) are appended to every image's features before the fusion
        network; ``lm_prefix`` (n, lm_width) are embeddings placed at the start of the prompt
        text in the LM input. Gradients flow to these three only."""

    def answer_token_counts(self, answers: list[str]) -> list[int]:
        """How many tokens :meth:`answer_loss` scores for each answer (end token included): N
        training processes weight their slices of a batch by it, so that their mean is one
        process's token mean."""
        raise NotImplementedError(f"{type(self).__name__} cannot count answer tokens")

    @abstractmethod
    def generate(
        self,
        features: torch.Tensor,
        prompts: list[str],
        insert: torch.Tensor | None = None,
        max_new_tokens: int = 24,
        num_beams: int = 1,
        *,
        fusion_tokens: torch.Tensor | None = None,
        lm_prefix: torch.Tensor | None = None,
    ) -> list[str]:
        """Batched decoding (KV cache), stopping at the end token; returns only the new text.
        Callers pass ``max_new_tokens`` from the box codec's longest answer."""

    @property
    def input_size(self) -> int:
        """The side, in pixels, of the square picture the vision encoder takes (grows with
        :meth:`set_image_size`): pictures reaching it should carry that many pixels."""
        raise NotImplementedError(f"{self.name}: input_size")

    def set_image_size(self, image_size: int) -> None:
        """Run the vision encoder at ``image_size`` pixels (interpolated position embeddings,
        paper Tab. 3 "Higher resolution"); the patch grid and ``site`` grow with it."""
        raise NotImplementedError(f"{self.name}: changing the input resolution is not supported")

    def prompt(self, obj: str) -> str:
        return self.prompt_template.format(obj=plain_text(obj))

    def unknown_words(self, texts: Iterable[str]) -> list[str]:
        """The words in ``texts`` this VLM's tokenizer has never seen (sorted, each once); a
        subword tokenizer spells every word, so by default none."""
        return []

    def vocabulary_warning(self, texts: Iterable[str]) -> str | None:
        """One warning naming the query words the VLM cannot read (its answer for them is a
        guess), or None when it knows them all."""
        return None

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")


_MARKUP = re.compile(r"<[^<>\s]*>")


def plain_text(text: str) -> str:
    """An object name or referral as plain words for a prompt: control characters and lone
    surrogates become spaces, whitespace runs one space, and anything shaped like a special token
    (``<image>``, ``<|endofchunk|>``, ``</s>``) loses its angle brackets, so a dataset's text can
    never add a media or end token. Ordinary names pass unchanged."""
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Cs") else ch for ch in str(text))
    text = _MARKUP.sub(lambda m: "(" + m.group(0)[1:-1] + ")", text)
    return " ".join(text.split())


def resolve_device(name: str | torch.device, key: str = "device") -> torch.device:
    """``auto`` -> cuda when torch sees a GPU, else cpu; ``cuda`` without a GPU is an error that
    names the params ``key`` (``vlm.device``, ``pretrain.device``)."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PinError(f"{key}={name!r} but torch sees no CUDA device; use cpu or auto")
    return torch.device(name)


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Eval mode and no gradients: the VLM stays bit-identical while an insert trains."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
