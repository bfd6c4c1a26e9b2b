"""Fresh composition per sample (``train.compose: fresh``), as the authors' dataset does: every
training sample is a new image composed by function C from data/objects (the kept rows of
data/filtered) and the backgrounds, in DataLoader worker processes, and the frozen encoder runs on
it in the step. ``cached`` (the default) reuses the fixed set of data/composed and its features.

Sample j of step s is image ``s * batch_size + j`` of a stream whose seed comes from
``train.seed`` (not ``compose.seed``: the stream is not the cached train split), so a step's
batch is a function of (seed, step) as in the cached path: a resumed run, any number of workers
and N processes (each composes its slice) see the same samples.
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path

import torch

from pin.boxes import BoxCodec
from pin.composed import ComposedImage, ComposedObject
from pin.params import ComposeParams


def stream_seed(seed: int) -> int:
    """The compose seed of the fresh stream of ``train.seed``."""
    digest = hashlib.sha256(f"pin-fresh|{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def as_image(record: dict) -> ComposedImage:
    """A record of :meth:`pin.synth.compose.Composer.compose` as the cached path reads it back."""
    objs = tuple(ComposedObject(o["category"], tuple(o["box"]), tuple(o["grid_box"]), o["referral"])
                 for o in record["objects"])
    return ComposedImage(record["image_id"], record["image"], record["width"], record["height"], objs)


class FreshBatches(torch.utils.data.Dataset):
    """Item ``step``: this process's slice of the step's batch, as (image, prompt object, answer)
    triples. Each worker process builds its own composer (object and background caches)."""

    def __init__(self, compose_p: ComposeParams, objects_dir: str | Path, filtered: str | Path, seed: int,
                 batch_size: int, rank: int = 0, world: int = 1):
        from pin.synth.backgrounds import scan_backgrounds
        from pin.synth.compose import check_backgrounds, load_pools, worker_args

        backgrounds = scan_backgrounds(compose_p.backgrounds)
        check_backgrounds(backgrounds, compose_p)
        pools, _ = load_pools(filtered)
        self.args = worker_args(compose_p.model_copy(update={"seed": stream_seed(seed)}), objects_dir, pools,
                                backgrounds)
        self.codec = BoxCodec(compose_p.grid)
        self.batch_size, self.per_rank, self.rank = batch_size, batch_size // world, rank
        self._composer = None

    def __getitem__(self, step: int) -> list[tuple]:
        from pin.synth.compose import Composer

        if self._composer is None:
            self._composer = Composer(*self.args)
        out = []
        for j in range(self.rank * self.per_rank, (self.rank + 1) * self.per_rank):
            record, _ = self._composer.compose("train", step * self.batch_size + j)
            image = as_image(record)
            obj = random.Random(record["seed"]).choice(image.objects)
            out.append((image.pil(), obj.referral, self.codec.encode(obj.grid_box)))
        return out

    def loader(self, steps: range, workers: int) -> torch.utils.data.DataLoader:
        """The steps' items in order, composed ahead by ``workers`` processes (0: in this one)."""
        return torch.utils.data.DataLoader(self, batch_size=None, sampler=steps, num_workers=workers,
                                           collate_fn=_identity, prefetch_factor=4 if workers else None,
                                           persistent_workers=False)


def _identity(item):
    return item
