"""The training loop: next-token loss on box answers, only the method's parameters learn (Sec. 4.1).

It trains PIN or any baseline of :mod:`pin.methods` (params ``method``). The same loop runs on
1 CPU, 1 GPU or N GPUs (``accelerate launch``). The frozen vision encoder's patch features are
computed once per image and reused across steps: PIN, VPT on the fusion network and CoOp act
after the encoder, so nothing upstream changes. Methods that change the encoder (VPT on the
vision encoder, LoRA) run it on every batch instead, with gradients flowing through it; they
train in one process (their parameters act outside the module DDP would wrap). Batches are a pure function of (seed, step),
so a resumed run sees exactly the data an uninterrupted one would.

Under ``accelerate launch`` each of N processes takes its slice of the same (seed, step) batch and
DDP averages the gradients; each slice's loss is weighted by its share of the batch's answer
tokens, so N processes follow one process's run up to float summation order
(tests/test_multiprocess.py: 2 processes vs 1 within 1e-4). Their feature cache is one file that
the processes fill together and all memory-map (:func:`shared_features`); only the main process
writes outputs.
A checkpoint holds the optimiser, the loss EMA and every RNG state, so a run killed at any
point and resumed from its last checkpoint ends with the same weights as an uninterrupted one
(``scripts/kill_anywhere.py`` checks it under ``dvc repro``).
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from pin.progress import tqdm

from pin.boxes import BoxCodec
from pin.checkpoint import Checkpointer
from pin.composed import ComposedImage
from pin.features import compute_features, shared_features  # noqa: F401 - compute_features: scripts import it here
from pin.frame import check_composite_size
from pin.io import atomic_write_json, record_timing
from pin.methods.base import Method
from pin.train_steps import check_trainable, log_record, resume, save_checkpoint, step_loss
from pin.vlm.base import FrozenVLM


@dataclass(frozen=True)
class Sample:
    image_index: int
    prompt: str
    answer: str


def make_samples(images: list[ComposedImage], codec: BoxCodec, step_seed: int, batch_size: int) -> list[Sample]:
    """A batch for one step: random images, one random object each, its box as the answer."""
    rng = random.Random(step_seed)
    out = []
    for _ in range(batch_size):
        i = rng.randrange(len(images))
        obj = rng.choice(images[i].objects)
        out.append(Sample(i, obj.referral, codec.encode(obj.grid_box)))
    return out


def make_accelerator(device: torch.device):
    """The run's Accelerator, made before the VLM touches a device: under ``accelerate launch`` its
    ``device`` is this process's own GPU (or the CPU when ``device`` is the CPU)."""
    from accelerate import Accelerator

    return Accelerator(cpu=device.type == "cpu")


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    val_loss: float | None
    samples_per_s: float  # wall-clock: reported, never written into a committed file
    trainable_params: int
    seconds: float


class BatchFeatures:
    """The fusion network's inputs for a batch of image indices: rows of the cached patch features,
    or - for a method that changes the encoder - the encoder run on the decoded images."""

    def __init__(self, vlm: FrozenVLM, method: Method, images: list[ComposedImage], desc: str, cache: bool = True,
                 accelerator=None, shared_path: Path | None = None):
        self.vlm, self.method, self.images = vlm, method, images
        self.cache = None
        if cache and not method.encodes_pixels and accelerator is not None and accelerator.num_processes > 1:
            # N processes: one memory-mapped host copy; each step moves its rows to the GPU
            dtype = torch.bfloat16 if vlm.device.type == "cuda" else torch.float32
            self.cache = shared_features(vlm, images, shared_path, accelerator, dtype=dtype)
        elif cache and not method.encodes_pixels:
            # On a GPU the cache lives there, in bf16 (OpenFlamingo-3B, 8,000 images: 4 GiB), so a
            # step moves no features over PCIe; on a CPU it stays fp32 in host memory.
            on_gpu = vlm.device.type == "cuda"
            feats = compute_features(vlm, images, desc=desc, dtype=torch.bfloat16 if on_gpu else torch.float32)
            self.cache = feats.to(vlm.device) if on_gpu else feats

    def __call__(self, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
        if self.cache is not None:
            return self.cache[idx.to(self.cache.device)].to(device, torch.float32)
        pixels = self.vlm.preprocess([self.images[int(i)].pil() for i in idx])
        return self.method.features(self.vlm, pixels).to(device, torch.float32)


def evaluate_loss(vlm: FrozenVLM, method: Method, feats: BatchFeatures, images: list[ComposedImage],
                  codec: BoxCodec, seed: int, n_batches: int, batch_size: int) -> float:
    method.eval()
    losses = []
    with torch.no_grad():
        for b in range(n_batches):
            samples = make_samples(images, codec, seed * 1_000_003 + b, batch_size)
            idx = torch.tensor([s.image_index for s in samples])
            loss = vlm.answer_loss(feats(idx, vlm.device), [vlm.prompt(s.prompt) for s in samples],
                                   [s.answer for s in samples], **method.conditioning())
            losses.append(float(loss))
    method.train()
    return sum(losses) / max(len(losses), 1)


def train_method(
    vlm: FrozenVLM,
    method: Method,
    train_images: list[ComposedImage],
    codec: BoxCodec,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    checkpoint_dir: Path,
    checkpoint_every: int = 100,
    log_every: int = 10,
    val_images: list[ComposedImage] | None = None,
    live=None,
    accelerator=None,
    fingerprint: str = "",
    cache_features: bool = True,
    fresh=None,
    compose_workers: int = 2,
) -> TrainResult:
    from accelerate import Accelerator

    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    check_trainable(method, accelerator, batch_size)
    torch.manual_seed(seed)
    checkpoint_dir = Path(checkpoint_dir)
    # fresh (pin.fresh.FreshBatches): every sample a new image, composed by the loader's workers
    feats = None if fresh is not None else BatchFeatures(
        vlm, method, train_images, desc="train features", cache=cache_features, accelerator=accelerator,
        shared_path=checkpoint_dir / "features-train.npy")
    val_feats = BatchFeatures(vlm, method, val_images, desc="val features", cache=cache_features,
                              accelerator=accelerator, shared_path=checkpoint_dir / "features-val.npy") \
        if val_images else None

    # fused: one kernel for the whole update on CUDA (the CPU path has no fused Adam)
    optimizer = torch.optim.Adam(method.trainable_parameters(), lr=lr, fused=accelerator.device.type == "cuda")
    model, optimizer = accelerator.prepare(method, optimizer)
    ckpt = Checkpointer(checkpoint_dir, fingerprint)
    start_step, history, loss_ema = resume(ckpt, method, optimizer, steps, accelerator)
    if live is not None and accelerator.is_main_process:
        for record in history:  # the curves up to the checkpoint, as the killed run logged them
            _log_live(live, record)

    t0 = time.perf_counter()
    bar = tqdm(range(start_step, steps), desc=f"train {method.name}", unit="step",
               disable=not accelerator.is_main_process, initial=start_step, total=steps)
    fresh_items = None if fresh is None else iter(fresh.loader(range(start_step, steps), compose_workers))
    for step in bar:
        batch = make_samples(train_images, codec, seed * 1_000_003 + step, batch_size) if fresh_items is None else None
        loss = step_loss(vlm, method, model, accelerator, batch, feats, fresh_items)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        # The EMA stays a device tensor: the host waits for the GPU only at log and checkpoint steps.
        value = loss.detach().float()
        loss_ema = value if loss_ema is None else 0.95 * loss_ema + 0.05 * value
        done = step + 1
        if done % log_every == 0 or done == steps:
            record = log_record(accelerator, value, loss_ema, done, lr)
            history.append(record)
            bar.set_postfix(loss=f"{record['loss_ema']:.3f}")
            if live is not None and accelerator.is_main_process:
                _log_live(live, record)
        if done % checkpoint_every == 0 and done < steps:
            save_checkpoint(ckpt, accelerator, done, method, optimizer, history, loss_ema)

    return _result(vlm, method, accelerator, val_feats, val_images, codec, seed=seed, steps=steps,
                   start_step=start_step, batch_size=batch_size, loss_ema=loss_ema, history=history,
                   seconds=time.perf_counter() - t0)


def _result(vlm: FrozenVLM, method: Method, accelerator, val_feats: BatchFeatures | None,
            val_images: list[ComposedImage] | None, codec: BoxCodec, *, seed: int, steps: int, start_step: int,
            batch_size: int, loss_ema: torch.Tensor | None, history: list[dict], seconds: float) -> TrainResult:
    """A finished run's result: its validation loss, its final loss EMA (over all processes) and
    its rate over the steps this start ran."""
    val_loss = None
    if val_feats is not None:
        val_loss = evaluate_loss(vlm, method, val_feats, val_images, codec, seed + 1, n_batches=4,
                                 batch_size=batch_size)
    if loss_ema is not None and accelerator.num_processes > 1:
        loss_ema = accelerator.reduce(loss_ema, "mean")
    accelerator.wait_for_everyone()  # every process is done with the shared feature files
    final = float(loss_ema) if loss_ema is not None else (history[-1]["loss_ema"] if history else math.nan)
    rate = (steps - start_step) * batch_size / seconds if steps > start_step else 0.0
    return TrainResult(steps, float(final), val_loss, rate, method.n_trainable_params, seconds)


def _nothing():
    import contextlib

    return contextlib.nullcontext(None)


def _log_live(live, record: dict) -> None:
    live.step = record["step"]
    for k in ("loss", "loss_ema", "lr"):
        live.log_metric(f"train/{k}", record[k])
    live.next_step()


def run_fingerprint(vlm_p, pin_p, train_p, grid: int, composed_dir: str | Path, method: str = "pin",
                    baselines_p=None) -> str:
    """What a checkpoint must match to be resumed from: the params that shape training, the
    composed data (its compose fingerprint) and, for the mini VLM, its weights file."""
    import hashlib

    from pin.io import fingerprint

    composed = Path(composed_dir) / "_config.json"
    data = composed.read_text() if composed.is_file() else ""
    weights = ""
    if vlm_p.name == "mini":
        f = Path(vlm_p.path) / "model.safetensors"
        if f.is_file():
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            weights = h.hexdigest()
    train = train_p.model_dump(exclude={"checkpoint_every", "steps"})  # same run, more steps: resumable
    return fingerprint({"vlm": vlm_p.model_dump(exclude={"device"}), "pin": pin_p.model_dump(), "train": train,
                        "grid": grid, "data": data, "weights": weights, "method": method,
                        "baselines": baselines_p.model_dump() if baselines_p is not None else None})


def write_train_metrics(path: Path, result: TrainResult, extra: dict) -> None:
    """The results only: the timings go to :func:`pin.io.record_timing` (a rerun must leave this
    committed file unchanged)."""
    atomic_write_json(path, {
        "steps": result.steps,
        "final_loss": None if math.isnan(result.final_loss) else round(result.final_loss, 4),
        "val_loss": None if result.val_loss is None else round(result.val_loss, 4),
        "trainable_params": result.trainable_params,
        **extra,
    })


def run_train(train_p, vlm: FrozenVLM, method: Method, grid: int, *, fingerprint: str = "",
              composed_dir: str = "data/composed", out_dir: str = "models/pin",
              metrics_path: str = "metrics/train.json", live_dir: str = "metrics/train_live",
              timing_path: str | None = "metrics/timing.json", accelerator=None, compose_p=None,
              objects_dir: str = "data/objects", filtered: str = "data/filtered/manifest.parquet") -> str:
    """The train stage on built components (``stages/train.py`` builds them from params): train
    ``method`` (fresh, seeded) on the frozen ``vlm`` to answer boxes on the ``grid``, save it with
    its grid, and write its metrics. A method that trains nothing (raw, random, incontext) is
    saved as its config, with zero trainable parameters and no training curve. ``fingerprint``:
    what a checkpoint must match to be resumed from (:func:`run_fingerprint`). ``accelerator``:
    the stage's (:func:`make_accelerator`); under N processes only the main one writes files.
    ``train_p.compose == "fresh"``: samples composed on the fly (:mod:`pin.fresh`) by ``compose_p``
    from ``objects_dir`` and the ``filtered`` manifest instead of read from ``composed_dir``/train."""
    import shutil

    from dvclive import Live

    from pin.composed import read_split_records

    codec = BoxCodec(grid)
    extra = {"method": method.name, "vlm": vlm.name,
             **({"insert_layers": method.config()["layers"]} if method.name == "pin" else {})}
    main = accelerator is None or accelerator.is_main_process
    if not method.trains:
        if not main:
            return f"method {method.name} trains nothing"
        method.save_pretrained(out_dir, grid=grid)
        with Live(live_dir, save_dvc_exp=False, dvcyaml=False):
            pass  # an empty summary: the stage declares these outputs for every method
        (Path(live_dir) / "plots" / "metrics").mkdir(parents=True, exist_ok=True)
        write_train_metrics(Path(metrics_path), TrainResult(0, math.nan, None, 0.0, 0, 0.0),
                            {**extra, "n_train_images": 0})
        return f"method {method.name} trains nothing; evaluated as it is"

    fresh = None
    if train_p.compose == "fresh":
        from pin.fresh import FreshBatches

        world, rank = (1, 0) if accelerator is None else (accelerator.num_processes, accelerator.process_index)
        fresh = FreshBatches(compose_p, objects_dir, filtered, train_p.seed, train_p.batch_size, rank, world)
        extra["compose"] = "fresh"
    train_images = [] if fresh else read_split_records(Path(composed_dir) / "train", limit=train_p.max_images)
    if fresh is not None:
        check_composite_size(compose_p.image_size, vlm.input_size)
    elif train_images:
        check_composite_size(min(min(im.width, im.height) for im in train_images), vlm.input_size)
    val_images = read_split_records(Path(composed_dir) / "val", limit=512)
    ckpt_dir = Path(out_dir).with_name(Path(out_dir).name + "_checkpoints")
    # a fresh log each start; a resumed run first replays the history saved in its checkpoint
    with Live(live_dir, save_dvc_exp=False, dvcyaml=False, resume=False) if main else _nothing() as live:
        result = train_method(vlm, method, train_images, codec, steps=train_p.steps, batch_size=train_p.batch_size,
                              lr=train_p.lr, seed=train_p.seed, checkpoint_dir=ckpt_dir,
                              checkpoint_every=train_p.checkpoint_every, log_every=train_p.log_every,
                              val_images=val_images, live=live, fingerprint=fingerprint,
                              cache_features=train_p.cache_features, accelerator=accelerator, fresh=fresh,
                              compose_workers=train_p.compose_workers)
    if not main:
        return "a worker process: the main process writes the outputs"
    method.save_pretrained(out_dir, grid=grid)
    n_images = train_p.steps * train_p.batch_size if fresh else len(train_images)  # fresh: each sample its own
    write_train_metrics(Path(metrics_path), result, {**extra, "n_train_images": n_images})
    if timing_path is not None:
        record_timing(timing_path, "train", {"seconds": round(result.seconds, 3),
                                            "samples_per_s": round(result.samples_per_s, 1)})
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return (f"{method.name}: {result.trainable_params:,} trainable params, {result.steps} steps, loss "
            f"{result.final_loss:.4f} (val {result.val_loss:.4f}), {result.samples_per_s:.0f} samples/s")
