"""BLIP-2 (OPT) behind the FrozenVLM interface, by composition of the model's own submodules.

Paper profile: ``Salesforce/blip2-opt-2.7b`` (ViT-g/14 at 224 -> 16x16 patches + CLS = 257 tokens
of width 1408). The insert is added to ``vision_model``'s ``last_hidden_state`` (post-LayerNorm,
LAVIS' ``ln_vision`` output, CLS at index 0) before the Q-Former, as in the authors' code.

The language-model input mirrors ``Blip2ForConditionalGeneration`` in transformers 5: there, the
processor writes one ``<image>`` placeholder per query token ahead of the tokenized prompt (which
starts with OPT's BOS) and ``forward``/``generate`` ``masked_scatter`` the projected Q-Former
outputs into those slots. We call the submodules ourselves and build the same sequence directly:
``[language_projection(qformer(query_tokens, features + pi)) ; embed(BOS + prompt [+ answer])]``.
Batches are left-padded (pads before the query embeds); OPT derives positions from the attention
mask's cumulative sum, so every row sees the positions it would see alone.

Baseline extension points (``pin.methods``): ``fusion_tokens`` are appended to the Q-Former's
``encoder_hidden_states``; ``lm_prefix`` rows go after the query embeds and BOS, before the
prompt text.
BLIP-2 was not trained on interleaved image-text data and cannot do in-context learning (paper
Sec. 5.1), so one image per prompt.
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch.nn import functional as F

from pin.errors import PinError
from pin.vlm.base import FrozenVLM, InsertSite, freeze

PAPER_MODEL = "Salesforce/blip2-opt-2.7b"
PROMPT = "In the image is a {obj} located at"  # paper Sec. 4.1


class Blip2Adapter(FrozenVLM):
    """A frozen ``Blip2ForConditionalGeneration`` (decoder-only LM) with a tokenizer and an image
    processor handed in; all model weights are frozen here."""

    name = "blip2"

    def __init__(self, model, tokenizer, image_processor, prompt_template: str = PROMPT):
        if not model.config.use_decoder_only_language_model:
            raise PinError("Blip2Adapter supports the decoder-only (OPT) BLIP-2 models, not the T5 ones")
        self.model = freeze(model)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.prompt_template = prompt_template
        vc = model.config.vision_config
        grid = vc.image_size // vc.patch_size
        self.site = InsertSite(n_positions=grid * grid + 1, width=vc.hidden_size, grid=grid, has_cls=True)
        tc = model.config.text_config
        self.eos_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tc.eos_token_id
        if self.eos_id is None:
            raise PinError("BLIP-2 tokenizer and text config define no eos token")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.answer_end = tokenizer.eos_token or ""
        self._interpolate_pos = False  # set by set_image_size

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path = PAPER_MODEL,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        local_files_only: bool = False,
        prompt_template: str = PROMPT,
    ) -> "Blip2Adapter":
        """Load model, tokenizer and image processor from a folder (or a hub id where the hub is
        reachable). The Q-Former stays fp32 whatever ``dtype`` (transformers keeps it so)."""
        from transformers import AutoImageProcessor, AutoTokenizer, Blip2ForConditionalGeneration

        from pin.weights import check_weights_folder

        where = str(path_or_id)
        check_weights_folder(where)  # a damaged file in a local folder: one line naming it
        try:
            model = Blip2ForConditionalGeneration.from_pretrained(where, dtype=dtype, local_files_only=local_files_only)
            tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=local_files_only)
            image_processor = AutoImageProcessor.from_pretrained(where, local_files_only=local_files_only)
        except OSError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise PinError(
                f"cannot load the BLIP-2 model {where!r} ({first[:200]}). Without hub access, save "
                f"{PAPER_MODEL!r} (model, tokenizer and processor via save_pretrained) on a machine that has "
                "it and set vlm.blip2_model to that local folder, or put it in the Hugging Face cache "
                "(HF_HOME) and run with HF_HUB_OFFLINE=1."
            ) from None
        if device is not None:
            model = model.to(device)
        return cls(model, tokenizer, image_processor, prompt_template=prompt_template)

    # ---- FrozenVLM --------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = self.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt").pixel_values
        return pixels.to(self.device, self.model.vision_model.embeddings.patch_embedding.weight.dtype)

    def vision_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.vision_model(pixel_values=pixels.to(self.device), return_dict=True,
                                       interpolate_pos_encoding=self._interpolate_pos).last_hidden_state

    @property
    def vision_encoder(self) -> torch.nn.Module:
        return self.model.vision_model

    @property
    def vision_blocks(self) -> torch.nn.ModuleList:
        return self.model.vision_model.encoder.layers

    @property
    def lora_targets(self) -> dict[str, list[str]]:
        # q/k/v (one packed Linear) and the MLP, as on the open_clip encoder (pin.vlm.openflamingo)
        return {"target_modules": ["self_attn.qkv", "mlp.fc1", "mlp.fc2"]}

    @property
    def lm_input_embeddings(self) -> torch.nn.Embedding:
        return self.model.language_model.get_input_embeddings()

    @property
    def input_size(self) -> int:
        size = self.image_processor.size  # a dict or transformers' SizeDict
        return int(size["height"] if isinstance(size, dict) else size.height)

    def set_image_size(self, image_size: int) -> None:
        """transformers' own ``interpolate_pos_encoding`` resamples the position embeddings."""
        import copy

        from pin.vlm.resolution import check_image_size

        patch = self.model.config.vision_config.patch_size
        grid = check_image_size(image_size, patch)
        processor = copy.deepcopy(self.image_processor)
        processor.size = {"height": image_size, "width": image_size}
        self.image_processor = processor
        self._interpolate_pos = True
        self.site = InsertSite(n_positions=grid * grid + 1, width=self.site.width, grid=grid, has_cls=True)

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
        if not (len(prompts) == len(answers) == features.shape[0]):
            raise ValueError(f"{features.shape[0]} feature rows, {len(prompts)} prompts, {len(answers)} answers")
        prefix = self._query_embeds(features, insert, fusion_tokens)
        answer_ids = [self._answer_ids(a) for a in answers]
        rows = [p + a for p, a in zip(self._prompt_ids(prompts), answer_ids)]
        embeds, mask = self._layout(prefix, rows, lm_prefix)
        # Left padding puts every answer at the end: only the last k positions predict answer
        # tokens, so only their logits are computed (saves (B, seq, vocab) floats on OPT's 50k vocab).
        k = max(len(a) for a in answer_ids) + 1
        logits = self.model.language_model(inputs_embeds=embeds, attention_mask=mask, logits_to_keep=k).logits
        labels = torch.full((len(rows), k - 1), -100, dtype=torch.long, device=logits.device)
        for i, a in enumerate(answer_ids):
            labels[i, k - 1 - len(a):] = torch.tensor(a, device=logits.device)
        logits = logits[:, :-1].float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)

    @torch.no_grad()
    def answer_token_counts(self, answers: list[str]) -> list[int]:
        return [len(self._answer_ids(a)) for a in answers]

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
        from transformers import GenerationConfig

        if len(prompts) != features.shape[0]:
            raise ValueError(f"{features.shape[0]} feature rows, {len(prompts)} prompts")
        prefix = self._query_embeds(features, insert, fusion_tokens)
        embeds, mask = self._layout(prefix, self._prompt_ids(prompts), lm_prefix)
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=False,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
            use_cache=True,
        )
        # With inputs_embeds and no input_ids, a decoder-only generate returns only new tokens.
        out = self.model.language_model.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=config)
        texts = []
        for row in out.tolist():
            if self.eos_id in row:
                row = row[: row.index(self.eos_id)]
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True, clean_up_tokenization_spaces=False))
        return texts

    # ---- pieces -----------------------------------------------------------------------------
    def _query_embeds(self, features: torch.Tensor, insert: torch.Tensor | None,
                      fusion_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """features (+ insert) [; fusion_tokens] -> Q-Former over the query tokens -> language
        projection: (B, Q, D)."""
        m = self.model
        x = features.to(self.device)
        # rows after the n_positions patch rows (a vision-encoder prompt's outputs) go in as they are
        if x.ndim != 3 or x.shape[1] < self.site.n_positions or x.shape[2] != self.site.width:
            want = f"(B, {self.site.n_positions}, {self.site.width})"
            raise ValueError(f"features of shape {tuple(x.shape)}, want {want}")
        if insert is not None:
            if tuple(insert.shape[-2:]) != (self.site.n_positions, self.site.width):
                raise ValueError(f"insert of shape {tuple(insert.shape)} does not match features {tuple(x.shape)}")
            # the sum in fp32: a small insert is not lost to fp16 rounding of the features
            pad = torch.nn.functional.pad(insert.to(self.device).float(), (0, 0, 0, x.shape[1] - self.site.n_positions))
            x = x.float() + pad
        if fusion_tokens is not None:
            if fusion_tokens.ndim != 2 or fusion_tokens.shape[1] != self.site.width:
                raise ValueError(f"fusion_tokens must be (n, {self.site.width}), got {tuple(fusion_tokens.shape)}")
            extra = fusion_tokens.to(self.device, x.dtype)
            x = torch.cat([x, extra.expand(x.shape[0], *extra.shape)], dim=1)
        x = x.to(m.query_tokens.dtype)  # the Q-Former is kept in fp32 by transformers
        queries = m.query_tokens.expand(x.shape[0], -1, -1)
        ones = torch.ones(x.shape[:-1], dtype=torch.long, device=x.device)
        out = m.qformer(query_embeds=queries, encoder_hidden_states=x, encoder_attention_mask=ones, return_dict=True)
        proj = m.language_projection
        return proj(out.last_hidden_state.to(proj.weight.dtype))

    def _prompt_ids(self, prompts: list[str]) -> list[list[int]]:
        # add_special_tokens: OPT's tokenizer prepends BOS (</s>), as the BLIP-2 processor does
        return [self.tokenizer(p, add_special_tokens=True).input_ids for p in prompts]

    def _answer_ids(self, answer: str) -> list[int]:
        if self.answer_end and answer.endswith(self.answer_end):
            answer = answer[: -len(self.answer_end)]
        return self.tokenizer(answer, add_special_tokens=False).input_ids + [self.eos_id]

    def _layout(self, prefix: torch.Tensor, rows: list[list[int]],
                lm_prefix: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ``[pad ; prefix ; tokens]`` embeddings and their attention mask. An
        ``lm_prefix`` (n, D) goes right after the BOS token, before the prompt text: the LM keeps
        seeing the query embeds followed by BOS, as it was trained."""
        embed = self.model.language_model.get_input_embeddings()
        n_context = 0
        if lm_prefix is not None:
            if lm_prefix.ndim != 2 or lm_prefix.shape[1] != prefix.shape[-1]:
                raise ValueError(f"lm_prefix must be (n, {prefix.shape[-1]}), got {tuple(lm_prefix.shape)}")
            n_context = lm_prefix.shape[0]
        batch, n_query = prefix.shape[:2]
        length = max(len(r) for r in rows)
        device = embed.weight.device
        ids = torch.full((batch, length), self.pad_id, dtype=torch.long, device=device)
        mask = torch.zeros((batch, n_query + n_context + length), dtype=torch.long, device=device)
        pad = [length - len(r) for r in rows]
        for i, r in enumerate(rows):
            ids[i, pad[i]:] = torch.tensor(r, dtype=torch.long, device=device)
            mask[i, pad[i]:] = 1
        tokens = embed(ids)
        prefix = prefix.to(device, tokens.dtype)
        context = [] if lm_prefix is None else [lm_prefix.to(device, tokens.dtype)]
        bos = self.tokenizer.bos_token_id
        out = []
        for i, r in enumerate(rows):
            # row i: pad[i] pad embeddings (masked out), the query embeds, BOS, [context,] the rest
            lead = pad[i] + int(bool(r) and r[0] == bos)
            out.append(torch.cat([tokens[i, : pad[i]], prefix[i], tokens[i, pad[i]:lead], *context,
                                  tokens[i, lead:]], dim=0))
        return torch.stack(out), mask
