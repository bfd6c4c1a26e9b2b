"""Progress bars that read well where a run is watched: redrawn in place in a terminal, a handful
of lines in a log (``dvc repro`` piped to a file, CI). Every bar in ``pin/`` is this ``tqdm``.

tqdm's defaults print an update every 0.1 s, which in a file is a line per step: a 600-step
training run wrote 662 lines and the paper profile's 150k steps would write ~150k. Off a
terminal, a bar here prints at start, every ``1 / LOG_UPDATES`` of its total and at the end; a
bar of unknown length at most once a minute.
"""
from __future__ import annotations

import math
import sys

from tqdm import tqdm as _tqdm

LOG_UPDATES = 5  # lines a bar of known length writes to a non-terminal, besides its first and last
LOG_INTERVAL_S = 60.0  # a bar of unknown length, off a terminal


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class tqdm(_tqdm):  # noqa: N801 - a drop-in for tqdm.tqdm
    """``tqdm.tqdm`` with few updates off a terminal (explicit ``miniters``/``mininterval`` win)."""

    def __init__(self, iterable=None, *args, **kwargs):
        self._redraws = _is_terminal(kwargs.get("file") or sys.stderr)
        if not self._redraws:
            total = kwargs.get("total")
            if total is None and iterable is not None and hasattr(iterable, "__len__"):
                total = len(iterable)
            if total:
                kwargs.setdefault("miniters", max(1, math.ceil((total - kwargs.get("initial", 0)) / LOG_UPDATES)))
                kwargs.setdefault("mininterval", 0.0)
            else:
                kwargs.setdefault("mininterval", LOG_INTERVAL_S)
            # tqdm's monitor thread drops miniters to 1 for a bar silent longer than maxinterval
            kwargs.setdefault("maxinterval", math.inf)
        super().__init__(iterable, *args, **kwargs)

    # a new postfix or description shows with the next update, not as a line of its own
    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        super().set_postfix(ordered_dict, refresh=refresh and self._redraws, **kwargs)

    def set_description(self, desc=None, refresh=True):
        super().set_description(desc, refresh=refresh and self._redraws)
