"""OpenFlamingo behind the :class:`~pin.vlm.base.FrozenVLM` interface, by composition.

The adapter holds an ``open_flamingo.Flamingo`` model (plus its image processor and tokenizer)
built by the caller, and calls its submodules itself instead of replacing any library method:

* ``patch_features``: ``flamingo.vision_encoder`` (an open_clip ``VisionTransformer`` with
  ``output_tokens=True``) under ``no_grad`` -> patch tokens ``(B, n_positions, width)``
  (``(B, 256, 1024)`` for ViT-L/14 at 224 px; no CLS token);
* fusion: ``flamingo.perceiver((features + insert)[:, None, None])`` -> ``(B, 1, latents, width)``,
  handed to every decoder layer with ``FlamingoLayer.condition_vis_x`` exactly as
  ``Flamingo._encode_vision_x`` does after its vision encoder;
* language: ``flamingo.lang_encoder`` (the LM with ``FlamingoLMMixin``), whose own ``forward``
  derives the ``<image>`` media locations from the input ids (and, with the library's
  ``_use_cached_vision_x`` flag, keeps them for key/value-cached decoding steps that carry no
  ``<image>`` token).

Extension points for the paper's baselines (``pin.methods``), also by composition:
``fusion_tokens`` are concatenated to the perceiver's input; ``lm_prefix`` rows replace
placeholder tokens right after the (last) ``<image>`` through a forward hook on the frozen input
embedding layer (the mixin needs ``input_ids`` to find the images, so ``inputs_embeds`` cannot be
used); features ``(B, T, n_positions, width)`` with ``T`` ``<image>`` tokens per prompt give
OpenFlamingo's interleaved few-shot input (perceiver -> ``(B, T, latents, width)``).

``generate`` is a small greedy loop over ``lang_encoder`` with the LM's KV cache (left padding,
positions from the attention mask) rather than ``Flamingo.generate``: on transformers 5 the mixin's
``forward(input_ids, attention_mask, ...)`` is called by ``GenerationMixin.generate`` without an
``attention_mask`` argument and fails.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from pin.errors import PinError
from pin.vlm.base import FrozenVLM, InsertSite, freeze

log = logging.getLogger(__name__)

PROMPT_TEMPLATE = "<image>In the image is a {obj} located at"
MEDIA_TOKEN = "<image>"
END_OF_CHUNK = "<|endofchunk|>"
IGNORE_INDEX = -100
SLOT = -1  # placeholder id in a prompt row for an lm_prefix embedding (never a real token id)
PARAMS_PREFIX = "vlm"  # the params.yaml section holding the paper profile's local paths


@dataclass(frozen=True)
class OpenFlamingoProfile:
    """The hub ids of one released OpenFlamingo model (for messages and documentation)."""

    checkpoint_id: str
    checkpoint_file: str
    clip_model: str
    clip_pretrained: str
    lang_id: str
    cross_attn_every_n_layers: int


OPENFLAMINGO_3B = OpenFlamingoProfile(
    checkpoint_id="openflamingo/OpenFlamingo-3B-vitl-mpt1b-langinstruct",
    checkpoint_file="checkpoint.pt",
    clip_model="ViT-L-14",
    clip_pretrained="openai",
    lang_id="anas-awadalla/mpt-1b-redpajama-200b-dolly",
    cross_attn_every_n_layers=1,
)


def set_gates(flamingo: torch.nn.Module, value: float) -> None:
    """Set every gated cross-attention gate (``attn_gate``, ``ff_gate``) to ``value``.

    A fresh Flamingo has all gates at 0 (tanh(0) = 0): the language model ignores the image and
    an insert gets exactly zero gradient. Tests with random weights open them (e.g. 1.0).
    """
    from open_flamingo.src.helpers import GatedCrossAttentionBlock

    with torch.no_grad():
        for m in flamingo.modules():
            if isinstance(m, GatedCrossAttentionBlock):
                m.attn_gate.fill_(value)
                m.ff_gate.fill_(value)


def masked_answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the positions whose label is not ``IGNORE_INDEX``.

    ``logits[:, t]`` predicts token ``t + 1``; ``labels`` is aligned with the input ids (prompt
    and padding set to ``IGNORE_INDEX``)."""
    targets = labels[:, 1:]
    if not (targets != IGNORE_INDEX).any():
        raise ValueError("no answer tokens to score")
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
    )


def _site_of(visual: torch.nn.Module) -> InsertSite:
    gh, gw = visual.grid_size
    if gh != gw:
        raise ValueError(f"non-square patch grid {gh}x{gw} is not supported")
    width = visual.positional_embedding.shape[-1]  # conv1 may be a convolutional stem
    has_cls = getattr(visual, "pool_type", "tok") == "none"  # 'tok'/'avg' drop the CLS token
    return InsertSite(n_positions=gh * gw + int(has_cls), width=width, grid=gh, has_cls=has_cls)


def _lm_takes_position_ids(lang_encoder: torch.nn.Module) -> bool:
    """Whether the LM under the Flamingo mixin accepts ``position_ids`` (Llama does; the MPT
    remote code, which uses ALiBi, may not)."""
    from open_flamingo.src.flamingo_lm import FlamingoLMMixin

    if isinstance(lang_encoder, FlamingoLMMixin):  # the mixin's forward takes **kwargs: look past it
        inner = super(FlamingoLMMixin, lang_encoder).forward
    else:
        inner = lang_encoder.forward
    try:
        params = inspect.signature(inner).parameters
    except (TypeError, ValueError):
        return False
    return "position_ids" in params


class TeacherForcing:
    """Prompt + answer texts -> right-padded ``(input_ids, attention_mask, labels)`` on the host.

    Holds only the tokenizer and three ids, so DataLoader workers can run it (pickled) while the
    model trains. Prompt and answer are tokenised separately and concatenated (the boundary is
    the one ``generate`` sees); ``labels`` is ``IGNORE_INDEX`` on the prompt and the padding."""

    def __init__(self, tokenizer, media_token_id: int, answer_end: str, pad_token_id: int) -> None:
        self.tokenizer, self.media_token_id = tokenizer, media_token_id
        self.answer_end, self.pad_token_id = answer_end, pad_token_id

    def tokenize(self, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]

    def prompt_ids(self, prompts: Sequence[str], n_images: int = 1, n_slots: int = 0) -> list[list[int]]:
        """Token ids of each prompt, checked to hold ``n_images`` ``<image>`` tokens, with
        ``n_slots`` ``SLOT`` placeholders right after the last one (where ``lm_prefix`` goes)."""
        rows = self.tokenize(prompts, add_special_tokens=True)
        media = self.media_token_id
        for p, row in zip(prompts, rows):
            if row.count(media) != n_images:
                count = "one" if n_images == 1 else str(n_images)
                raise ValueError(f"prompt must hold exactly {count} {MEDIA_TOKEN} token(s), one per image: {p!r}")
        if n_slots:
            at = [len(row) - row[::-1].index(media) for row in rows]  # just after the last image
            rows = [row[:i] + [SLOT] * n_slots + row[i:] for row, i in zip(rows, at)]
        return rows

    def __call__(self, prompts: Sequence[str], answers: Sequence[str], n_images: int = 1,
                 n_slots: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n_slots`` > 0 leaves ``SLOT`` ids after the image for the adapter's prefix to fill."""
        if len(prompts) != len(answers):
            raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
        p_rows = self.prompt_ids(prompts, n_images, n_slots)
        a_rows = self.tokenize([a + self.answer_end for a in answers], add_special_tokens=False)
        length = max(len(p) + len(a) for p, a in zip(p_rows, a_rows))
        b = len(p_rows)
        ids = torch.full((b, length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((b, length), dtype=torch.long)
        labels = torch.full((b, length), IGNORE_INDEX, dtype=torch.long)
        for i, (p, a) in enumerate(zip(p_rows, a_rows)):
            n = len(p) + len(a)
            ids[i, :n] = torch.tensor(p + a)
            mask[i, :n] = 1
            labels[i, len(p):n] = torch.tensor(a)
        return ids, mask, labels


class OpenFlamingoAdapter(FrozenVLM):
    """A frozen OpenFlamingo (or a model built from the same parts, like the mini VLM).

    ``flamingo`` is frozen in place (eval mode, ``requires_grad=False``). Each prompt holds one
    ``<image>`` token per image: one with features ``(B, n_positions, width)``, ``T`` with
    interleaved features ``(B, T, n_positions, width)`` (in-context examples; each text token
    attends to the image just before it, as OpenFlamingo was trained). Not re-entrant: a call
    conditions the decoder layers on its images and clears them when it returns (one call at a
    time per model).
    """

    supports_interleaved_images = True

    def __init__(
        self,
        flamingo: torch.nn.Module,
        image_processor,
        tokenizer,
        *,
        name: str = "openflamingo",
        prompt_template: str = PROMPT_TEMPLATE,
        answer_end: str = END_OF_CHUNK,
    ) -> None:
        self.flamingo = freeze(flamingo)
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.name = name
        self.prompt_template = prompt_template
        self.answer_end = answer_end

        visual = flamingo.vision_encoder
        visual.output_tokens = True  # what open_flamingo's factory sets: forward -> (pooled, tokens)
        self.site = _site_of(visual)

        media_ids = tokenizer.encode(MEDIA_TOKEN, add_special_tokens=False)
        end_ids = tokenizer.encode(answer_end, add_special_tokens=False)
        if media_ids != [flamingo.media_token_id]:
            raise ValueError(
                f"tokenizer encodes {MEDIA_TOKEN!r} as {media_ids}, model expects [{flamingo.media_token_id}]"
            )
        if len(end_ids) != 1:
            raise ValueError(f"answer_end {answer_end!r} must be one token, got {end_ids}")
        self.end_token_id = end_ids[0]
        stops = {self.end_token_id, flamingo.eoc_token_id}
        if tokenizer.eos_token_id is not None:
            stops.add(tokenizer.eos_token_id)
        self.stop_token_ids = sorted(stops)
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.end_token_id
        self._position_ids = _lm_takes_position_ids(flamingo.lang_encoder)
        self.teacher_forcing = TeacherForcing(tokenizer, flamingo.media_token_id, answer_end, self.pad_token_id)

    # ----------------------------------------------------------------- helpers
    @property
    def device(self) -> torch.device:
        return next(self.flamingo.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.flamingo.perceiver.parameters()).dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> OpenFlamingoAdapter:
        self.flamingo.to(device=device, dtype=dtype)
        return self

    def _tokenize(self, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
        return self.teacher_forcing.tokenize(texts, add_special_tokens)

    def _prompt_ids(self, prompts: Sequence[str], n_images: int = 1, n_slots: int = 0) -> list[list[int]]:
        return self.teacher_forcing.prompt_ids(prompts, n_images, n_slots)

    def teacher_forcing_batch(
        self, prompts: Sequence[str], answers: Sequence[str], n_images: int = 1, n_slots: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded ``(input_ids, attention_mask, labels)`` on the model's device (see
        :class:`TeacherForcing`)."""
        dev = self.device
        return tuple(t.to(dev) for t in self.teacher_forcing(prompts, answers, n_images, n_slots))

    def _left_padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, length - len(r):] = torch.tensor(r)
            mask[i, length - len(r):] = 1
        return ids.to(self.device), mask.to(self.device)

    def fuse(
        self,
        features: torch.Tensor,
        insert: torch.Tensor | None = None,
        fusion_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``perceiver(features + insert [; fusion_tokens])``: ``(B, n_positions, width)`` (one
        image) or ``(B, T, n_positions, width)`` (T images) -> ``(B, T, latents, width)``."""
        site = self.site
        x = features[:, None] if features.ndim == 3 else features
        if x.ndim != 4 or tuple(x.shape[2:]) != (site.n_positions, site.width):
            raise ValueError(
                f"features must be (B, {site.n_positions}, {site.width}) or (B, T, {site.n_positions}, "
                f"{site.width}), got {tuple(features.shape)}"
            )
        x = x.to(device=self.device, dtype=torch.float32)
        if insert is not None:
            if tuple(insert.shape) != (site.n_positions, site.width):
                raise ValueError(
                    f"insert must be ({site.n_positions}, {site.width}), got {tuple(insert.shape)}"
                )
            x = x + insert.to(device=x.device, dtype=torch.float32)  # added in fp32
        if fusion_tokens is not None:
            if fusion_tokens.ndim != 2 or fusion_tokens.shape[1] != site.width:
                raise ValueError(f"fusion_tokens must be (n, {site.width}), got {tuple(fusion_tokens.shape)}")
            extra = fusion_tokens.to(device=x.device, dtype=torch.float32)
            x = torch.cat([x, extra.expand(*x.shape[:2], *extra.shape)], dim=2)
        # the perceiver takes (B, T, F, N, D): one frame per image
        return self.flamingo.perceiver(x.to(self.dtype)[:, :, None])

    @contextlib.contextmanager
    def _conditioned(self, vis: torch.Tensor, keep_media_locations: bool) -> Iterator[None]:
        """Condition every decoder layer on ``vis`` for the duration of the block.

        ``keep_media_locations`` sets the mixin's ``_use_cached_vision_x`` flag, under which a
        forward call without ``<image>`` tokens (a cached decoding step) attends to the image of
        the prompt seen before, as ``Flamingo.generate`` does."""
        lm = self.flamingo.lang_encoder
        for layer in lm._get_decoder_layers():
            layer.condition_vis_x(vis)
        lm._use_cached_vision_x = keep_media_locations
        try:
            yield
        finally:
            lm.clear_conditioned_layers()
            lm._use_cached_vision_x = False

    @contextlib.contextmanager
    def _with_prefix(self, slots: torch.Tensor, prefix: torch.Tensor) -> Iterator[None]:
        """Inside the block, the LM's input embeddings at ``slots`` ((B, L) bool, ``n`` per row)
        are replaced by the ``prefix`` rows (n, lm_width), in order.

        The Flamingo mixin derives the image positions from ``input_ids``, so the LM must be
        called with ids, not ``inputs_embeds``; a forward hook on the (frozen) embedding layer
        swaps the slot rows on the way in. A longer input (uncached decoding appends tokens on the
        right) keeps its slots where they were."""
        embedding = self.lm_input_embeddings

        def swap(_module, _args, output):
            where = slots
            if output.shape[1] > where.shape[1]:
                where = F.pad(where, (0, output.shape[1] - where.shape[1]))
            out = output.clone()
            out[where] = prefix.to(out.dtype).repeat(out.shape[0], 1)
            return out

        handle = embedding.register_forward_hook(swap)
        try:
            yield
        finally:
            handle.remove()

    def _lm(self, ids, mask, positions, past=None, use_cache=False, prefix=None):
        """One LM call; ``prefix`` = ``(slots, lm_prefix)`` fills the slots of a full-sequence
        call (a cached step holds no slots: their keys and values are in ``past``)."""
        kwargs = {"input_ids": ids, "attention_mask": mask, "use_cache": use_cache}
        if past is not None:
            kwargs["past_key_values"] = past
        if self._position_ids:
            kwargs["position_ids"] = positions
        if prefix is None or past is not None:
            return self.flamingo.lang_encoder(**kwargs)
        with self._with_prefix(*prefix):
            return self.flamingo.lang_encoder(**kwargs)

    @staticmethod
    def _positions(mask: torch.Tensor) -> torch.Tensor:
        return (mask.cumsum(-1) - 1).clamp(min=0)

    def _slots(self, ids: torch.Tensor, lm_prefix: torch.Tensor | None):
        """Turn ``SLOT`` placeholders into pad ids; ``(slots, lm_prefix)`` or None."""
        if lm_prefix is None:
            return None
        if lm_prefix.ndim != 2 or lm_prefix.shape[1] != self.lm_width:
            raise ValueError(f"lm_prefix must be (n, {self.lm_width}), got {tuple(lm_prefix.shape)}")
        slots = ids == SLOT
        ids.masked_fill_(slots, self.pad_token_id)  # any id: its embedding is replaced
        return slots, lm_prefix.to(self.device)

    @staticmethod
    def _n_images(features: torch.Tensor) -> int:
        return 1 if features.ndim == 3 else features.shape[1]

    # --------------------------------------------------------------- interface
    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = torch.stack([self.image_processor(im.convert("RGB")) for im in images])
        return pixels.to(device=self.device, dtype=next(self.flamingo.vision_encoder.parameters()).dtype)

    def vision_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        visual = self.flamingo.vision_encoder
        out = visual(pixels.to(device=self.device, dtype=next(visual.parameters()).dtype))
        tokens = out[1]
        want = (self.site.n_positions, self.site.width)
        if tuple(tokens.shape[1:]) != want:
            raise RuntimeError(f"vision encoder gave tokens {tuple(tokens.shape)}, expected (B, *{want})")
        return tokens

    @property
    def vision_encoder(self) -> torch.nn.Module:
        return self.flamingo.vision_encoder

    @property
    def vision_blocks(self) -> torch.nn.ModuleList:
        transformer = self.flamingo.vision_encoder.transformer
        if not getattr(transformer, "batch_first", True):
            raise ValueError("the open_clip vision transformer runs sequence-first; vision prompts need batch-first")
        return transformer.resblocks

    @property
    def lora_targets(self) -> dict[str, list[str]]:
        # open_clip blocks: q/k/v live in nn.MultiheadAttention's packed ``in_proj_weight``, which
        # the attention reads directly (no Linear forward), so LoRA wraps the parameter itself;
        # the MLP's c_fc / c_proj are Linear layers. The attention's out_proj is left out: the
        # attention never calls its forward either, and peft's nn.MultiheadAttention wrapper
        # merges and unmerges the LoRA delta into the frozen weights on every call, which leaves
        # them changed by float rounding (the frozen encoder must stay bit-identical).
        return {"target_modules": ["mlp.c_fc", "mlp.c_proj"], "target_parameters": ["attn.in_proj_weight"]}

    @property
    def lm_input_embeddings(self) -> torch.nn.Embedding:
        return self.flamingo.lang_encoder.get_input_embeddings()

    def set_image_size(self, image_size: int) -> None:
        from pin.vlm.resolution import interpolate_open_clip, resized_processor

        interpolate_open_clip(self.flamingo.vision_encoder, image_size)
        self.image_processor = resized_processor(self.image_processor, image_size)
        self.site = _site_of(self.flamingo.vision_encoder)

    def logits(
        self,
        features: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        insert: torch.Tensor | None = None,
        *,
        fusion_tokens: torch.Tensor | None = None,
        prefix: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """LM logits ``(B, L, vocab)`` for a full (right-padded) sequence, image-conditioned."""
        vis = self.fuse(features, insert, fusion_tokens)
        with self._conditioned(vis, keep_media_locations=False):
            out = self._lm(input_ids, attention_mask, self._positions(attention_mask), prefix=prefix)
        return out.logits

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
        if len(features) != len(prompts):
            raise ValueError(f"{len(features)} feature rows but {len(prompts)} prompts")
        n_slots = 0 if lm_prefix is None else lm_prefix.shape[0]
        ids, mask, labels = self.teacher_forcing_batch(prompts, answers, self._n_images(features), n_slots)
        prefix = self._slots(ids, lm_prefix)
        return masked_answer_loss(self.logits(features, ids, mask, insert, fusion_tokens=fusion_tokens,
                                              prefix=prefix), labels)

    def generate(
        self,
        features: torch.Tensor,
        prompts: list[str],
        insert: torch.Tensor | None = None,
        max_new_tokens: int = 24,
        num_beams: int = 1,
        use_cache: bool = True,
        *,
        fusion_tokens: torch.Tensor | None = None,
        lm_prefix: torch.Tensor | None = None,
    ) -> list[str]:
        """Greedy decoding; ``use_cache=False`` recomputes the whole sequence at every step (the
        reference the cached path is tested against)."""
        if num_beams != 1:
            raise NotImplementedError("only greedy decoding (num_beams=1) is implemented")
        if len(features) != len(prompts):
            raise ValueError(f"{len(features)} feature rows but {len(prompts)} prompts")
        if not prompts:
            return []
        n_slots = 0 if lm_prefix is None else lm_prefix.shape[0]
        with torch.no_grad():
            ids, mask = self._left_padded(self._prompt_ids(prompts, self._n_images(features), n_slots))
            prefix = self._slots(ids, lm_prefix)
            vis = self.fuse(features, insert, fusion_tokens)
            with self._conditioned(vis, keep_media_locations=True):
                new = self._greedy(ids, mask, max_new_tokens, use_cache, prefix)
        stops = set(self.stop_token_ids)
        texts = []
        for row in new.tolist():
            cut = next((i for i, t in enumerate(row) if t in stops), len(row))
            texts.append(
                self.tokenizer.decode(row[:cut], skip_special_tokens=True, clean_up_tokenization_spaces=False)
            )
        return texts

    def _greedy(self, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, use_cache: bool,
                prefix=None) -> torch.Tensor:
        b = ids.shape[0]
        positions = self._positions(mask)
        stops = torch.tensor(self.stop_token_ids, device=ids.device)
        done = torch.zeros(b, dtype=torch.bool, device=ids.device)
        new: list[torch.Tensor] = []
        past = None
        step_ids, step_pos = ids, positions
        for _ in range(max_new_tokens):
            if use_cache:
                out = self._lm(step_ids, mask, step_pos, past=past, use_cache=True, prefix=prefix)
                past = out.past_key_values
            else:
                out = self._lm(ids, mask, positions, prefix=prefix)
            nxt = out.logits[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, self.pad_token_id), nxt)
            new.append(nxt)
            done = done | torch.isin(nxt, stops)
            if bool(done.all()):
                break
            step_ids, step_pos = nxt[:, None], positions[:, -1:] + 1
            ids = torch.cat([ids, step_ids], dim=1)
            mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)
            positions = torch.cat([positions, step_pos], dim=1)
        if not new:
            return torch.empty((b, 0), dtype=torch.long, device=ids.device)
        return torch.stack(new, dim=1)

    # ------------------------------------------------------------ paper profile
    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | Path | None,
        lang_dir: str | Path | None,
        tokenizer_dir: str | Path | None = None,
        *,
        clip_model: str = OPENFLAMINGO_3B.clip_model,
        clip_pretrained: str = OPENFLAMINGO_3B.clip_pretrained,
        cross_attn_every_n_layers: int = OPENFLAMINGO_3B.cross_attn_every_n_layers,
        decoder_layers_attr_name: str | None = None,
        ln_patch_tokens: bool = False,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        name: str = "openflamingo",
        profile: OpenFlamingoProfile = OPENFLAMINGO_3B,
    ) -> OpenFlamingoAdapter:
        """Build OpenFlamingo with ``open_flamingo.create_model_and_transforms`` from local files
        and load its checkpoint. Defaults are the paper's OpenFlamingo-3B (vitl-mpt1b-langinstruct):

        * ``checkpoint`` (params ``vlm.checkpoint``): a local copy of ``checkpoint.pt`` from
          ``openflamingo/OpenFlamingo-3B-vitl-mpt1b-langinstruct`` (``.safetensors`` also read),
          or a local snapshot folder of that repository;
        * ``lang_dir`` (params ``vlm.lang_model``): a local snapshot of
          ``anas-awadalla/mpt-1b-redpajama-200b-dolly``; its folder name must keep
          ``mpt-1b-redpajama-200b`` (open_flamingo's factory adds the ``get_input_embeddings``
          fix MPT-1B needs only when the path contains that string);
        * ``tokenizer_dir``: defaults to ``lang_dir``;
        * ``clip_model`` / ``clip_pretrained`` (params ``vlm.clip_model`` / ``vlm.clip_pretrained``):
          open_clip ``ViT-L-14`` with ``openai`` weights, which open_clip must find in its local
          cache (``HF_HUB_OFFLINE=1``), or a path to the weights file.

        ``ln_patch_tokens=False`` (default) feeds the perceiver patch tokens *without* the
        vision tower's final LayerNorm, as OpenFlamingo was trained (open_clip < 2.23 applied
        ``ln_post`` to the pooled token only; this project pins open_clip 3.3.0, whose default
        normalises all tokens, so ``final_ln_after_pool`` is switched on). The PIN authors ran
        open_clip 2.23.0 (normalised tokens): use ``ln_patch_tokens=True`` with their released PIN.

        NOT VERIFIED HERE: the language side of the 3B model is MosaicML's MPT-1B remote code
        (``trust_remote_code=True``). It cannot be fetched on this machine (no hub access), and
        newer transformers releases are reported to break it (open_flamingo issues #294, #303,
        #306); only the same factory path with a tiny local Llama has been tested. Failures in
        the remote code are re-raised as :class:`~pin.errors.PinError` with the original error
        chained.
        """
        import open_flamingo

        tokenizer_dir = tokenizer_dir if tokenizer_dir is not None else lang_dir
        if checkpoint is not None and Path(checkpoint).is_dir():
            checkpoint = Path(checkpoint) / profile.checkpoint_file
        _check_inputs(profile, checkpoint, lang_dir, tokenizer_dir, clip_pretrained)
        lang_dir, tokenizer_dir = Path(lang_dir), Path(tokenizer_dir)
        model_type = _model_type(lang_dir)
        if model_type in {"mosaic_gpt", "mpt"}:
            if "mpt-1b-redpajama-200b" not in str(lang_dir):
                raise PinError(
                    f"{PARAMS_PREFIX}.lang_model={lang_dir}: an MPT-1B folder must keep "
                    f"'mpt-1b-redpajama-200b' in its path (open_flamingo keys its MPT fix on it); "
                    f"rename it, e.g. to .../{profile.lang_id.split('/')[-1]}"
                )
            decoder_layers_attr_name = decoder_layers_attr_name or "transformer.blocks"
        try:
            with contextlib.redirect_stdout(io.StringIO()) as said:
                flamingo, processor, tokenizer = open_flamingo.create_model_and_transforms(
                    clip_vision_encoder_path=clip_model,
                    clip_vision_encoder_pretrained=clip_pretrained,
                    lang_encoder_path=str(lang_dir),
                    tokenizer_path=str(tokenizer_dir),
                    cross_attn_every_n_layers=cross_attn_every_n_layers,
                    use_local_files=True,
                    decoder_layers_attr_name=decoder_layers_attr_name,
                )
            log.debug(said.getvalue().strip())
        except Exception as err:  # remote code / open_clip / transformers failures, chained
            raise PinError(
                f"could not build OpenFlamingo from clip={clip_model}:{clip_pretrained}, "
                f"lang={lang_dir}, tokenizer={tokenizer_dir}: {type(err).__name__}: {err}"
            ) from err

        state = _load_state_dict(Path(checkpoint))
        missing, unexpected = flamingo.load_state_dict(state, strict=False)
        if unexpected:
            raise PinError(f"{checkpoint}: {len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
        fusion_missing = [k for k in missing if k.startswith("perceiver.") or "gated_cross_attn" in k]
        if fusion_missing:
            raise PinError(
                f"{checkpoint}: not an OpenFlamingo checkpoint for this model: "
                f"{len(fusion_missing)} fusion weights missing, e.g. {fusion_missing[:3]}"
            )
        flamingo.vision_encoder.final_ln_after_pool = not ln_patch_tokens
        flamingo.to(device=device, dtype=dtype)
        return cls(flamingo, processor, tokenizer, name=name)


def _missing_weights(profile: OpenFlamingoProfile, what: str) -> PinError:
    p = PARAMS_PREFIX
    return PinError(
        f"OpenFlamingo weights not found ({what}). The paper profile needs local copies of "
        f"{profile.checkpoint_id} ({profile.checkpoint_file}), {profile.lang_id} (model and "
        f"tokenizer) and open_clip {profile.clip_model}/{profile.clip_pretrained}; set "
        f"{p}.checkpoint to the checkpoint file, {p}.lang_model to the language model's folder "
        f"(and {p}.clip_pretrained to a weights file unless open_clip has '{profile.clip_pretrained}' "
        f"cached), or use the offline {p}.name=mini"
    )


def _check_inputs(profile, checkpoint, lang_dir, tokenizer_dir, clip_pretrained) -> None:
    if checkpoint is None or not Path(checkpoint).is_file():
        raise _missing_weights(profile, f"checkpoint={checkpoint}")
    if lang_dir is None or not (Path(lang_dir) / "config.json").is_file():
        raise _missing_weights(profile, f"lang_model={lang_dir} has no config.json")
    if not Path(tokenizer_dir).is_dir():
        raise _missing_weights(profile, f"tokenizer_dir={tokenizer_dir}")
    looks_like_path = "/" in clip_pretrained or clip_pretrained.endswith((".pt", ".bin", ".safetensors"))
    if looks_like_path and not Path(clip_pretrained).is_file():
        raise _missing_weights(profile, f"clip_pretrained={clip_pretrained}")


def _model_type(lang_dir: Path) -> str:
    try:
        return json.loads((lang_dir / "config.json").read_text()).get("model_type", "")
    except (OSError, ValueError) as err:
        raise PinError(f"{lang_dir / 'config.json'}: unreadable: {err}") from None


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise PinError(f"{path}: cannot read checkpoint: {type(err).__name__}: {err}") from err
    if isinstance(state, dict) and "model_state_dict" in state:
        state = state["model_state_dict"]
    return {k.removeprefix("module."): v for k, v in state.items()}
