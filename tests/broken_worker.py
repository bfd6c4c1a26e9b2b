"""Params that a compose worker process cannot unpickle (test_compose): how a worker whose start
fails is reported."""
from __future__ import annotations

import multiprocessing
import os

from pin.params import ComposeParams


class UnpicklableInWorker(ComposeParams):
    """Compose params whose unpickling fails in a child process (as a params object from another
    version of the code would), and works in the parent."""

    def __setstate__(self, state):
        if multiprocessing.parent_process() is not None:
            raise RuntimeError("this params object cannot be unpickled in a worker")
        super().__setstate__(state)


class KillsTheWorker(ComposeParams):
    """Compose params whose unpickling ends a child process outright (as a crash in native code
    or an out-of-memory kill would): nothing is raised that a worker could report."""

    def __setstate__(self, state):
        if multiprocessing.parent_process() is not None:
            os._exit(3)
        super().__setstate__(state)
