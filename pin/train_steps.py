"""The parts of one :func:`pin.train.train_method` run that are not the loop itself: the checks
before it starts, resuming from a checkpoint, one step's loss, the logged record and the
checkpoint a step saves."""
from __future__ import annotations

import torch

from pin.checkpoint import Checkpointer


def check_trainable(method, accelerator, batch_size: int) -> None:
    if not method.trains:
        raise ValueError(f"method {method.name} trains nothing")
    if method.encodes_pixels and accelerator.num_processes > 1:
        raise ValueError(f"method {method.name} trains in one process (run stages/train.py without accelerate launch)")
    world = accelerator.num_processes
    if batch_size % world:
        raise ValueError(f"train.batch_size={batch_size} must be a multiple of the {world} processes "
                         "(each takes an equal slice of the step's batch)")


def resume(ckpt: Checkpointer, method, optimizer, steps: int, accelerator
           ) -> tuple[int, list[dict], torch.Tensor | None]:
    """(first step, history, loss EMA) from the run's last checkpoint, or a fresh start without one."""
    history: list[dict] = []
    start_step = 0
    loss_ema = None
    state = ckpt.load()
    accelerator.wait_for_everyone()  # no process saves before every process has read
    if state is not None and state["step"] <= steps:
        method.load_trainable_state(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        start_step, history, loss_ema = state["step"], state["history"], state.get("loss_ema")
        if state.get("ranks"):
            loss_ema = state["ranks"][accelerator.process_index]["loss_ema"]  # this process's own (its slice's losses)
        if loss_ema is not None:
            loss_ema = torch.tensor(loss_ema, dtype=torch.float32, device=accelerator.device)
        Checkpointer.restore_rng(state, accelerator.process_index, accelerator.device)
        accelerator.print(f"resuming from step {start_step}")
    return start_step, history, loss_ema


def step_loss(vlm, method, model, accelerator, batch: list | None, feats, fresh_items) -> torch.Tensor:
    """This process's loss for one step: its slice of the step's whole ``batch`` (of
    :func:`pin.train.make_samples`), or without one its next freshly composed items."""
    rank, world = accelerator.process_index, accelerator.num_processes
    with accelerator.autocast():
        if batch is not None:
            per_rank = len(batch) // world
            samples = batch[rank * per_rank : (rank + 1) * per_rank]  # each process its slice of the same batch
            prompts, answers = [s.prompt for s in samples], [s.answer for s in samples]
            features = feats(torch.tensor([s.image_index for s in samples]), accelerator.device)
        else:
            items = next(fresh_items)  # this process's slice, composed ahead by the workers
            prompts, answers = [q for _, q, _ in items], [a for _, _, a in items]
            features = method.features(vlm, vlm.preprocess([im for im, _, _ in items])).to(
                accelerator.device, torch.float32)
        loss = vlm.answer_loss(features, [vlm.prompt(q) for q in prompts], answers, **model())
    if world > 1:
        # Answers differ in length: weighted by its share of the batch's answer tokens, the
        # slice's mean averages (DDP) to the whole batch's token mean, one process's loss.
        mine = sum(vlm.answer_token_counts(answers))
        total = sum(vlm.answer_token_counts([s.answer for s in batch])) if batch is not None else \
            float(accelerator.reduce(torch.tensor(float(mine), device=accelerator.device), "sum"))
        loss = loss * (mine * world / total)
    return loss


def log_record(accelerator, value: torch.Tensor, loss_ema: torch.Tensor, done: int, lr: float) -> dict:
    world = accelerator.num_processes
    if world > 1:  # the whole batch's: the mean over the slices (the EMA is linear)
        value = accelerator.reduce(value, "mean")
    # a sync (the tensor goes on: resumed and uninterrupted runs agree)
    ema = float(loss_ema if world == 1 else accelerator.reduce(loss_ema, "mean"))
    # no wall-clock value: the curves are committed and must be the same on every run
    return {"step": done, "loss": float(value), "loss_ema": ema, "lr": lr}


def save_checkpoint(ckpt: Checkpointer, accelerator, done: int, method, optimizer, history: list[dict],
                    loss_ema: torch.Tensor | None) -> None:
    ema_now = None if loss_ema is None else float(loss_ema)
    ranks = None
    if accelerator.num_processes > 1:  # a collective: every process hands the main one its RNG and EMA
        from accelerate.utils import gather_object

        ranks = gather_object([{"rng": Checkpointer.rng_state(accelerator.device), "loss_ema": ema_now}])
    elif accelerator.device.type == "cuda":
        ranks = [{"rng": Checkpointer.rng_state(accelerator.device), "loss_ema": ema_now}]
    if accelerator.is_main_process:
        ckpt.save(done, method, optimizer, history, ema_now, ranks)
