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
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from pin.vlm.base import FrozenVLM, freeze
from pin.vlm.greedy import beam_decode, greedy_decode
from pin.vlm.of_parts import lm_takes_position_ids, set_gates, site_of  # noqa: F401
from pin.vlm.of_loader import build_openflamingo
from pin.vlm.of_text import (  # noqa: F401  (the adapter's text vocabulary, re-exported for callers)
    END_OF_CHUNK,
    IGNORE_INDEX,
    MEDIA_TOKEN,
    PROMPT_TEMPLATE,
    SLOT,
    TeacherForcing,
    masked_answer_loss,
)

log = logging.getLogger(__name__)


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
        self.site = site_of(visual)

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
        self._position_ids = lm_takes_position_ids(flamingo.lang_encoder)
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
        image) or ``(B, T, n_positions, width)`` (T images) -> ``(B, T, latents, width)``. Rows
        after the ``n_positions`` patch rows (a vision-encoder prompt's outputs) go in as they are."""
        site = self.site
        x = features[:, None] if features.ndim == 3 else features
        if x.ndim != 4 or x.shape[2] < site.n_positions or x.shape[3] != site.width:
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
            rows = (0, 0, 0, x.shape[2] - site.n_positions)  # nothing added to rows after the patches
            x = x + F.pad(insert.to(device=x.device, dtype=torch.float32), rows)  # added in fp32
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
        if tokens.ndim != 3 or tokens.shape[1] < want[0] or tokens.shape[2] != want[1]:
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

    @property
    def input_size(self) -> int:
        return int(self.flamingo.vision_encoder.image_size[0])

    def set_image_size(self, image_size: int) -> None:
        from pin.vlm.resolution import interpolate_open_clip, resized_processor

        interpolate_open_clip(self.flamingo.vision_encoder, image_size)
        self.image_processor = resized_processor(self.image_processor, image_size)
        self.site = site_of(self.flamingo.vision_encoder)

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

    def answer_token_counts(self, answers: list[str]) -> list[int]:
        return [len(row) for row in self._tokenize([a + self.answer_end for a in answers], False)]

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
        """Greedy decoding, or beam search with ``num_beams`` > 1 (``eval.num_beams``; the
        authors' run script uses 3); ``use_cache=False`` recomputes the whole sequence at every
        step (the reference the cached path is tested against)."""
        if num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {num_beams}")
        if len(features) != len(prompts):
            raise ValueError(f"{len(features)} feature rows but {len(prompts)} prompts")
        if not prompts:
            return []
        n_slots = 0 if lm_prefix is None else lm_prefix.shape[0]
        with torch.no_grad():
            ids, mask = self._left_padded(self._prompt_ids(prompts, self._n_images(features), n_slots))
            vis = self.fuse(features, insert, fusion_tokens)
            if num_beams > 1:  # each prompt and its image once per beam
                ids, mask, vis = (t.repeat_interleave(num_beams, 0) for t in (ids, mask, vis))
            prefix = self._slots(ids, lm_prefix)
            with self._conditioned(vis, keep_media_locations=True):
                new = self._greedy(ids, mask, max_new_tokens, use_cache, prefix, num_beams)
        stops = set(self.stop_token_ids)
        texts = []
        for row in new.tolist():
            cut = next((i for i, t in enumerate(row) if t in stops), len(row))
            texts.append(
                self.tokenizer.decode(row[:cut], skip_special_tokens=True, clean_up_tokenization_spaces=False)
            )
        return texts

    def _greedy(self, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, use_cache: bool,
                prefix=None, num_beams: int = 1) -> torch.Tensor:
        def step(step_ids, mask, positions, past, use_cache):
            return self._lm(step_ids, mask, positions, past=past, use_cache=use_cache, prefix=prefix)

        if num_beams > 1:
            return beam_decode(step, ids, mask, self._positions(mask), max_new_tokens, use_cache,
                               self.stop_token_ids, self.pad_token_id, num_beams)
        return greedy_decode(step, ids, mask, self._positions(mask), max_new_tokens, use_cache,
                             self.stop_token_ids, self.pad_token_id)

    # ------------------------------------------------------------ paper profile
    @classmethod
    def from_pretrained(cls, checkpoint: str | Path | None, lang_dir: str | Path | None,
                        tokenizer_dir: str | Path | None = None, *, name: str = "openflamingo",
                        **options) -> OpenFlamingoAdapter:
        """OpenFlamingo from local files (the paper's OpenFlamingo-3B by default), frozen.
        ``options`` and what each path must hold: :func:`~pin.vlm.of_loader.build_openflamingo`."""
        flamingo, processor, tokenizer = build_openflamingo(checkpoint, lang_dir, tokenizer_dir, **options)
        return cls(flamingo, processor, tokenizer, name=name)
