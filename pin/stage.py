"""Shared wrapper for DVC stage entry points: one-line errors, non-zero exit, a summary line."""
from __future__ import annotations

import sys
import time
from typing import Callable

from pin.errors import PinError
from pin.params import ParamsError


def run_stage(name: str, main: Callable[[], str | None]) -> None:
    start = time.perf_counter()
    try:
        summary = main()
    except (PinError, ParamsError) as err:
        print(f"[{name}] error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"[{name}] interrupted; rerun to resume", file=sys.stderr)
        sys.exit(130)
    took = time.perf_counter() - start
    print(f"[{name}] done in {took:.1f}s" + (f": {summary}" if summary else ""))
