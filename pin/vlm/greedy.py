"""Greedy and beam-search decoding over any causal LM step function, with or without its KV cache.

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


def beam_decode(
    step: Callable,
    ids: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    max_new_tokens: int,
    use_cache: bool,
    stop_token_ids: Sequence[int],
    pad_token_id: int,
    num_beams: int,
    length_penalty: float = 1.0,
) -> torch.Tensor:
    """Beam search: new token ids ``(B, <= max_new_tokens)`` of the best of ``num_beams`` beams.

    ``ids`` (and whatever ``step`` conditions on, e.g. the image) hold each prompt ``num_beams``
    times in a row (``repeat_interleave``): ``B * num_beams`` rows. Each step keeps the
    ``num_beams`` best continuations per prompt by summed log-probability; a beam that produced a
    stop token stays in the set with its score. The answer is the beam with the best score divided
    by its length (tokens up to its stop) to the power ``length_penalty``, as transformers'
    ``generate`` ranks finished beams (its default 1.0). The cache (a transformers ``Cache``) is
    reordered with the beams; beams never move between prompts, so per-prompt conditioning holds."""
    k = num_beams
    n = ids.shape[0]
    if n % k:
        raise ValueError(f"{n} rows is not a multiple of num_beams={k}")
    b, dev = n // k, ids.device
    stops = torch.tensor(list(stop_token_ids), device=dev)
    scores = torch.zeros(b, k, device=dev)
    scores[:, 1:] = -torch.inf  # the beams of a prompt start identical: expand the first only
    scores = scores.view(-1)
    done = torch.zeros(n, dtype=torch.bool, device=dev)
    lengths = torch.zeros(n, dtype=torch.long, device=dev)
    new = torch.empty((n, 0), dtype=torch.long, device=dev)
    base = torch.arange(b, device=dev)[:, None] * k
    past = None
    step_ids, step_pos = ids, positions
    for _ in range(max_new_tokens):
        if use_cache:
            out = step(step_ids, mask, step_pos, past, True)
            past = out.past_key_values
        else:
            out = step(ids, mask, positions, None, False)
        logp = out.logits[:, -1].float().log_softmax(-1)
        vocab = logp.shape[-1]
        finished = torch.full_like(logp, -torch.inf)
        finished[:, pad_token_id] = 0.0  # a stopped beam goes on with padding, at no cost
        logp = torch.where(done[:, None], finished, logp)
        top, idx = (scores[:, None] + logp).view(b, k * vocab).topk(k, dim=1)
        src = (base + idx // vocab).view(-1)
        tok = (idx % vocab).view(-1)
        scores, was_done = top.view(-1), done[src]
        new = torch.cat([new[src], tok[:, None]], dim=1)
        lengths = lengths[src] + (~was_done).long()
        done = was_done | torch.isin(tok, stops)
        if bool(done.all()):
            break
        if use_cache:
            past.reorder_cache(src)
        ids = torch.cat([ids[src], tok[:, None]], dim=1)
        mask = torch.cat([mask[src], torch.ones_like(tok[:, None])], dim=1)
        positions = positions[src]
        step_ids, step_pos = tok[:, None], positions[:, -1:] + 1
        positions = torch.cat([positions, step_pos], dim=1)
    if new.shape[1] == 0:
        return torch.empty((b, 0), dtype=torch.long, device=dev)
    ranked = scores / lengths.clamp(min=1).float() ** length_penalty
    best = base.view(-1) + ranked.view(b, k).argmax(1)
    return new[best]
