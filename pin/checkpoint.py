"""Training checkpoints: one atomic file holding everything a resumed run needs (see
:class:`Checkpointer`)."""
from __future__ import annotations

import random
from pathlib import Path

import torch

from pin.methods.base import Method


class Checkpointer:
    """Atomic checkpoints of everything a resumed run needs to continue exactly as an uninterrupted
    one: the method's trainable state, the optimiser, the loss history and EMA, and every RNG state. Each carries
    the fingerprint of its run (params, data, frozen VLM); a checkpoint of another run is ignored
    and deleted, never resumed from. A checkpoint is written to a temporary name and renamed, so a
    kill leaves the previous complete one."""

    FILE = "last.pt"

    def __init__(self, directory: Path, fingerprint: str = ""):
        self.dir = Path(directory)
        self.fingerprint = fingerprint

    def save(self, step: int, method: Method, optimizer: torch.optim.Optimizer, history: list,
             loss_ema: float | None = None, ranks: list[dict] | None = None) -> None:
        """``ranks``: under N processes, each process's :meth:`process_state` (index = process)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".ckpt.{step}.tmp"
        torch.save({"step": step, "fingerprint": self.fingerprint, "method": method.trainable_state(),
                    "optimizer": optimizer.state_dict(), "history": history, "loss_ema": loss_ema,
                    "rng": self.rng_state(), **({"ranks": ranks} if ranks is not None else {})}, tmp)
        tmp.replace(self.dir / self.FILE)

    @staticmethod
    def rng_state(device: torch.device | None = None) -> dict:
        """This process's RNG states; its GPU's too when ``device`` is one."""
        import numpy as np

        state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
        if device is not None and device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(device)
        return state

    def load(self):
        """The last checkpoint of this run, or None (no checkpoint, another run's, unreadable)."""
        path = self.dir / self.FILE
        for stale in self.dir.glob(".ckpt.*.tmp") if self.dir.is_dir() else ():
            stale.unlink(missing_ok=True)  # a save cut off by a kill
        if not path.exists():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            ok = isinstance(state, dict) and state.get("fingerprint") == self.fingerprint
        except Exception as err:  # noqa: BLE001 - a checkpoint we cannot read is one we do not have
            print(f"[train] warning: {path}: unreadable checkpoint ({type(err).__name__}); starting over")
            ok = False
        if not ok:
            path.unlink(missing_ok=True)
            return None
        return state

    @staticmethod
    def restore_rng(state: dict, rank: int = 0, device: torch.device | None = None) -> None:
        """Process ``rank``'s RNG states from a checkpoint (one process's: ``rng``)."""
        import numpy as np

        ranks = state.get("ranks")
        rng = (ranks[rank]["rng"] if ranks else state.get("rng")) or {}
        if "cuda" in rng and device is not None and device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], device)
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "python" in rng:
            random.setstate(rng["python"])
        if "numpy" in rng:
            np.random.set_state(rng["numpy"])
