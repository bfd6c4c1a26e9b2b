"""The text side of OpenFlamingo-style models: the prompt's special tokens, teacher-forced
batches (prompt + answer -> ids, mask, labels) and the answer-only loss. Shared by the adapter,
the mini VLM's pretraining and the training loop; no model in here."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

PROMPT_TEMPLATE = "<image>In the image is a {obj} located at"
MEDIA_TOKEN = "<image>"
END_OF_CHUNK = "<|endofchunk|>"
IGNORE_INDEX = -100
SLOT = -1  # placeholder id in a prompt row for an lm_prefix embedding (never a real token id)


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
