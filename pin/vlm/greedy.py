"""Greedy decoding over any causal LM step function, with or without its KV cache.

Left-padded prompts; positions come from the attention mask, so padded rows decode as if alone.
A row stops at its first stop token and is padded after it; the loop ends when every row has
stopped. ``use_cache=False`` recomputes the whole sequence each step: the reference the cached
path is tested against."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def greedy_decode(
    step: Callable,
    ids: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    max_new_tokens: int,
    use_cache: bool,
    stop_token_ids: Sequence[int],
    pad_token_id: int,
) -> torch.Tensor:
    """New token ids ``(B, <= max_new_tokens)``. ``step(ids, mask, positions, past, use_cache)``
    returns an output with ``.logits`` (and ``.past_key_values`` when ``use_cache``)."""
    b = ids.shape[0]
    stops = torch.tensor(list(stop_token_ids), device=ids.device)
    done = torch.zeros(b, dtype=torch.bool, device=ids.device)
    new: list[torch.Tensor] = []
    past = None
    step_ids, step_pos = ids, positions
    for _ in range(max_new_tokens):
        if use_cache:
            out = step(step_ids, mask, step_pos, past, True)
            past = out.past_key_values
        else:
            out = step(ids, mask, positions, None, False)
        nxt = out.logits[:, -1].argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, pad_token_id), nxt)
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
