"""The offline default's "mini" VLM: a small OpenFlamingo built from the same parts.

* vision: an open_clip ``VisionTransformer`` (64 px, patch 8 -> 8x8 = 64 patch tokens);
* fusion: open_flamingo's ``PerceiverResampler`` and ``GatedCrossAttentionBlock`` (smaller heads
  and depth than OpenFlamingo's fixed defaults);
* language: a small transformers ``LlamaForCausalLM`` with open_flamingo's ``FlamingoLMMixin``
  (as an explicit subclass), and the word-level tokenizer of :mod:`pin.vlm.tokenizer`.

So the offline pipeline runs the very adapter (:class:`~pin.vlm.openflamingo.OpenFlamingoAdapter`)
that the paper profile runs. Its weights are an input of the PIN pipeline like OpenFlamingo's: a
separate stage pretrains it on captions (objects named, no positions) and saves it with
:func:`save_mini`; :func:`load_mini` gives the frozen adapter.

Saved folder: ``mini_vlm.json`` (config, token ids, parameter count), ``model.safetensors``,
``tokenizer.json`` + ``tokenizer_config.json``; written to a temporary sibling folder and renamed
into place, so a reader never sees a half-written model.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import SimpleNamespace

import torch
from open_flamingo import Flamingo
from open_flamingo.src.flamingo_lm import FlamingoLMMixin
from open_flamingo.src.helpers import GatedCrossAttentionBlock, PerceiverResampler
from transformers import LlamaConfig, LlamaForCausalLM

from pin.errors import PinError
from pin.io import DIR_MODE, atomic_write_json
from pin.vlm.openflamingo import END_OF_CHUNK, MEDIA_TOKEN, OpenFlamingoAdapter, set_gates
from pin.vlm.pretrain_text import words_of
from pin.vlm.tokenizer import build_word_tokenizer, load_tokenizer, save_tokenizer, words_from_names
from pin.weights import check_weights_file

FORMAT = "pin-mini-flamingo"
FORMAT_VERSION = 1
CONFIG_FILE = "mini_vlm.json"
WEIGHTS_FILE = "model.safetensors"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class MiniVLMConfig:
    """Every size of the mini VLM. Defaults: 2.19M parameters (8.4 MiB fp32 safetensors) with the
    base vocabulary, 2.35M (9.0 MiB) with ~1,300 category words; cross-attention every 2nd LM
    layer (OpenFlamingo-3B: every layer; ``xattn_every=1`` adds 0.26M)."""

    # vision tower (open_clip VisionTransformer)
    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    vision_mlp_ratio: float = 4.0
    vision_embed_dim: int = 64  # pooled-embedding projection (unused by the VLM; for CLIP-style pretraining)
    # "conv": a small convolutional stem instead of the single patchify conv (Xiao et al. 2021,
    # "Early convolutions help transformers see better"): a ViT trained from scratch on a few
    # thousand images learns to recognise objects several times faster with it.
    stem: str = "patch"
    ln_patch_tokens: bool = False  # as OpenFlamingo: patch tokens before the final LayerNorm
    # perceiver resampler
    perceiver_depth: int = 2
    perceiver_heads: int = 4
    perceiver_dim_head: int = 32
    perceiver_latents: int = 32
    perceiver_ff_mult: int = 2
    # language model (Llama)
    lm_width: int = 128
    lm_layers: int = 4
    lm_heads: int = 4
    lm_intermediate: int | None = None  # None: ~8/3 * lm_width, a multiple of 32 (352 for 128)
    lm_max_positions: int = 128
    tie_embeddings: bool = True
    # gated cross-attention
    xattn_every: int = 2
    xattn_heads: int = 4
    xattn_dim_head: int = 32
    xattn_ff_mult: int = 2
    gate_init: float = 0.0  # OpenFlamingo starts closed (tanh(0) = 0)
    seed: int = 0

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"MiniVLMConfig: {msg}")

        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("int", "float") and f.name not in ("seed", "gate_init"):
                need(v > 0, f"{f.name} must be > 0, got {v}")
        need(self.image_size % self.patch_size == 0, "patch_size must divide image_size")
        need(self.vision_width % self.vision_heads == 0, "vision_heads must divide vision_width")
        need(self.lm_width % self.lm_heads == 0, "lm_heads must divide lm_width")
        need(self.xattn_every <= self.lm_layers, "xattn_every must be <= lm_layers")
        need(self.lm_intermediate is None or self.lm_intermediate > 0, "lm_intermediate must be > 0")
        need(self.stem in ("patch", "conv"), f"stem must be 'patch' or 'conv', got {self.stem!r}")
        need(self.stem != "conv" or self.patch_size & (self.patch_size - 1) == 0,
             "the conv stem needs a power-of-2 patch_size")

    @property
    def lm_ffn(self) -> int:
        if self.lm_intermediate is not None:
            return self.lm_intermediate
        return max(32, round(8 * self.lm_width / 3 / 32) * 32)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MiniVLMConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"MiniVLMConfig: unknown keys {unknown}")
        return cls(**d)


class FlamingoLlamaForCausalLM(FlamingoLMMixin, LlamaForCausalLM):
    """``LlamaForCausalLM`` with open_flamingo's mixin as a real subclass (what the library's
    factory does at run time with ``extend_instance``); decoder layers live at ``model.layers``."""

    DECODER_LAYERS = "model.layers"


def mini_image_processor(config: MiniVLMConfig):
    """PIL image -> (3, image_size, image_size) tensor, CLIP normalisation (open_clip's eval transform)."""
    import open_clip

    return open_clip.image_transform(config.image_size, is_train=False, mean=OPENAI_MEAN, std=OPENAI_STD)


def conv_stem(patch_size: int, width: int) -> torch.nn.Sequential:
    """Stride-2 3x3 convolutions down to one token per patch (patch_size must be a power of 2);
    it replaces VisionTransformer.conv1, so the output shape (B, width, grid, grid) is the same."""
    n = patch_size.bit_length() - 1
    if patch_size < 2 or 2**n != patch_size:
        raise ValueError(f"conv stem needs a power-of-2 patch size, got {patch_size}")
    chans = [3] + [min(width, 32 * 2**i) for i in range(n - 1)] + [width]
    layers: list[torch.nn.Module] = []
    for i in range(n):
        layers.append(torch.nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1, bias=i == n - 1))
        if i < n - 1:
            layers += [torch.nn.BatchNorm2d(chans[i + 1]), torch.nn.ReLU(inplace=True)]
    return torch.nn.Sequential(*layers)


def _build(config: MiniVLMConfig, tokenizer) -> Flamingo:
    from open_clip.transformer import VisionTransformer

    media_id = tokenizer.convert_tokens_to_ids(MEDIA_TOKEN)
    eoc_id = tokenizer.convert_tokens_to_ids(END_OF_CHUNK)
    unk = tokenizer.unk_token_id
    if media_id in (None, unk) or eoc_id in (None, unk):
        raise ValueError(f"tokenizer lacks {MEDIA_TOKEN} or {END_OF_CHUNK}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        visual = VisionTransformer(
            image_size=config.image_size,
            patch_size=config.patch_size,
            width=config.vision_width,
            layers=config.vision_layers,
            heads=config.vision_heads,
            mlp_ratio=config.vision_mlp_ratio,
            output_dim=config.vision_embed_dim,
            final_ln_after_pool=not config.ln_patch_tokens,
            output_tokens=True,
        )
        if config.stem == "conv":
            visual.conv1 = conv_stem(config.patch_size, config.vision_width)
        lm = FlamingoLlamaForCausalLM(
            LlamaConfig(
                vocab_size=len(tokenizer),
                hidden_size=config.lm_width,
                intermediate_size=config.lm_ffn,
                num_hidden_layers=config.lm_layers,
                num_attention_heads=config.lm_heads,
                num_key_value_heads=config.lm_heads,
                max_position_embeddings=config.lm_max_positions,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                bos_token_id=None,
                tie_word_embeddings=config.tie_embeddings,
            )
        )
        lm.set_decoder_layers_attr_name(FlamingoLlamaForCausalLM.DECODER_LAYERS)
        flamingo = Flamingo(
            SimpleNamespace(visual=visual),  # Flamingo keeps ``vision_encoder.visual``
            lm,
            eoc_token_id=eoc_id,
            media_token_id=media_id,
            vis_dim=config.vision_width,
            cross_attn_every_n_layers=config.xattn_every,
        )
        # Flamingo's constructor builds the fusion network at OpenFlamingo's fixed sizes
        # (perceiver depth 6, 8x64 heads); swap in smaller ones and let the mixin rebuild its
        # FlamingoLayers from them (``init_flamingo_layers``, the library's documented way).
        flamingo.perceiver = PerceiverResampler(
            dim=config.vision_width,
            depth=config.perceiver_depth,
            dim_head=config.perceiver_dim_head,
            heads=config.perceiver_heads,
            num_latents=config.perceiver_latents,
            ff_mult=config.perceiver_ff_mult,
        )
        lm.gated_cross_attn_layers = torch.nn.ModuleList(
            [
                GatedCrossAttentionBlock(
                    dim=config.lm_width,
                    dim_visual=config.vision_width,
                    dim_head=config.xattn_dim_head,
                    heads=config.xattn_heads,
                    ff_mult=config.xattn_ff_mult,
                )
                if (i + 1) % config.xattn_every == 0
                else None
                for i in range(config.lm_layers)
            ]
        )
        lm.init_flamingo_layers(False)
        set_gates(flamingo, config.gate_init)
    return flamingo


def build_mini_flamingo(config: MiniVLMConfig, vocab_words: Iterable[str], whole_numbers: bool = False):
    """A freshly initialised (trainable, train-mode) mini Flamingo.

    ``vocab_words``: the category names (and any caption words) the tokenizer must know; they
    are split into lower-case words and added to the base vocabulary.
    Returns ``(flamingo, image_processor, tokenizer)``."""
    tokenizer = build_word_tokenizer(vocab_words, whole_numbers=whole_numbers)
    return _build(config, tokenizer), mini_image_processor(config), tokenizer


def count_parameters(flamingo: torch.nn.Module) -> int:
    return sum(p.numel() for p in flamingo.parameters())  # shared (tied) parameters once


def trainable_for_pretraining(flamingo: Flamingo) -> dict[str, list[torch.nn.Parameter]]:
    """Parameter groups for a pretraining script (each parameter in exactly one group):

    * ``vision``: the open_clip vision tower (train it separately, or keep it frozen);
    * ``perceiver``: the perceiver resampler;
    * ``xattn``: the gated cross-attention blocks, gates included;
    * ``lm``: the rest of the language model (embeddings, decoder layers, norm, head).

    Returns the groups only; the caller sets ``requires_grad`` and builds the optimiser."""
    vision = list(flamingo.vision_encoder.parameters())
    perceiver = list(flamingo.perceiver.parameters())
    xattn = list(flamingo.lang_encoder.gated_cross_attn_layers.parameters())
    taken = {id(p) for p in xattn}
    lm = [p for p in flamingo.lang_encoder.parameters() if id(p) not in taken]
    return {"vision": vision, "perceiver": perceiver, "xattn": xattn, "lm": lm}


def unique_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each shared tensor (tied embeddings, aliased blocks) once, under its
    alphabetically first name, contiguous. ``safetensors.torch.save_model`` records the dropped
    aliases as header metadata, which safetensors writes in hash-map order - different bytes on
    every run; ``load_model`` finds the aliases from the model itself, so they are not needed."""
    state = module.state_dict()
    groups: dict[tuple, list[str]] = {}
    for name, t in state.items():
        key = (t.device.type, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
               tuple(t.stride()), t.dtype)
        groups.setdefault(key, []).append(name)
    return {min(names): state[min(names)].detach().contiguous() for names in groups.values()}


def save_mini(
    directory: str | Path,
    flamingo: Flamingo,
    tokenizer,
    config: MiniVLMConfig,
    meta: dict | None = None,
) -> None:
    """Write the mini VLM to ``directory`` (replaced whole, atomically)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    for stale in directory.parent.glob(f".{directory.name}.*"):  # left by a save that was killed
        if stale.suffix in (".tmp", ".old") and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
    tmp.chmod(DIR_MODE)  # mkdtemp makes it private
    try:
        save_file(unique_state(flamingo), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        save_tokenizer(tokenizer, tmp)
        atomic_write_json(
            tmp / CONFIG_FILE,
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "config": config.to_dict(),
                "vocab_size": len(tokenizer),
                "media_token_id": flamingo.media_token_id,
                "eoc_token_id": flamingo.eoc_token_id,
                "n_parameters": count_parameters(flamingo),
                "meta": meta or {},
            },
        )
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.{os.getpid()}.old")
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_mini_config(directory: str | Path) -> dict:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file() or not (Path(directory) / WEIGHTS_FILE).is_file():
        raise PinError(
            f"mini VLM not found in {directory} (need {CONFIG_FILE} and {WEIGHTS_FILE}); make it with "
            "`dvc repro pretrain_vlm`, or set vlm.path to a folder that stage wrote"
        )
    try:
        info = json.loads(path.read_text())
    except ValueError as err:
        raise PinError(f"{path}: not valid JSON: {err}") from None
    if info.get("format") != FORMAT or info.get("version") != FORMAT_VERSION:
        raise PinError(f"{path}: not a {FORMAT} v{FORMAT_VERSION} file")
    return info


def load_mini_parts(directory: str | Path, device: str | torch.device = "cpu"):
    """``(flamingo, image_processor, tokenizer, config)`` from a folder written by
    :func:`save_mini`; the model is left trainable (for resuming a pretraining run)."""
    from safetensors.torch import load_model

    directory = Path(directory)
    info = read_mini_config(directory)
    try:
        config = MiniVLMConfig.from_dict(info["config"])
    except (TypeError, ValueError) as err:
        raise PinError(f"{directory / CONFIG_FILE}: {err}") from None
    tokenizer = load_tokenizer(directory)
    if len(tokenizer) != info["vocab_size"]:
        raise PinError(f"{directory}: tokenizer has {len(tokenizer)} tokens, config says {info['vocab_size']}")
    flamingo = _build(config, tokenizer)
    check_weights_file(directory / WEIGHTS_FILE)  # a truncated file: one line naming it
    try:
        load_model(flamingo, str(directory / WEIGHTS_FILE), strict=True)
    except (RuntimeError, KeyError, OSError) as err:
        raise PinError(f"{directory / WEIGHTS_FILE}: does not match its config: {err}") from err
    return flamingo.to(device), mini_image_processor(config), tokenizer, config


class MiniVLM(OpenFlamingoAdapter):
    """OpenFlamingo's adapter on a saved mini VLM, plus a check of query words against what it
    learned: the words of its pretraining texts (category names in ``meta.vocabulary``, a few
    question words). Any other word is ``<unk>`` or an embedding that never trained."""

    def __init__(self, flamingo, image_processor, tokenizer, folder: str | Path, categories: list[str] | None = None):
        super().__init__(flamingo, image_processor, tokenizer, name="mini")
        self.folder = Path(folder)
        self.categories = categories
        vocab = set(tokenizer.get_vocab())  # a folder saved without meta.vocabulary: all its words
        self._known = vocab if categories is None else vocab & set(words_from_names(words_of(categories)))

    def unknown_words(self, texts: Iterable[str]) -> list[str]:
        return [w for w in words_from_names(texts) if w not in self._known]

    def vocabulary_warning(self, texts: Iterable[str]) -> str | None:
        texts = list(texts)
        unknown = self.unknown_words(texts)
        if not unknown:
            return None
        n = sum(1 for t in texts if self.unknown_words([t]))
        shown = ", ".join(repr(w) for w in unknown[:12]) + (f" and {len(unknown) - 12} more" if len(unknown) > 12 else "")
        return (f"the mini VLM has never seen the word{'s' if len(unknown) > 1 else ''} {shown} "
                f"({n} of {len(texts)} quer{'ies' if len(texts) > 1 else 'y'}), so those boxes are guesses. It "
                f"knows only the categories it was pretrained on: `pin info {self.folder}` lists them "
                f"(meta.vocabulary in {self.folder / CONFIG_FILE})")


def load_mini(directory: str | Path, device: str | torch.device = "cpu") -> MiniVLM:
    """The saved mini VLM behind the frozen adapter interface."""
    flamingo, processor, tokenizer, _ = load_mini_parts(directory, device)
    categories = read_mini_config(directory).get("meta", {}).get("vocabulary")
    return MiniVLM(flamingo, processor, tokenizer, directory, categories)
