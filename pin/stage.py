"""Shared wrapper for DVC stage entry points: one-line errors, non-zero exit, a summary line."""
from __future__ import annotations

import sys
import time
from typing import Callable

from pin.errors import PinError
from pin.params import ParamsError


def one_line(text: object) -> str:
    """A message on one line: newlines and runs of spaces from wrapped library errors collapse."""
    return " ".join(str(text).split())


def run_stage(name: str, main: Callable[[], str | None]) -> None:
    """Run a stage's ``main``. A bad input (PinError, ParamsError) or a file-system failure
    (OSError: permission denied, disk full, ...) prints ``[name] error: <one line>`` on stderr and
    exits 1; Ctrl-C exits 130 (every stage resumes or restarts cleanly). Anything else is a bug
    and keeps its traceback."""
    start = time.perf_counter()
    try:
        summary = main()
    except (PinError, ParamsError) as err:
        print(f"[{name}] error: {one_line(err)}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        what = err.strerror or type(err).__name__
        print(f"[{name}] error: {one_line(where + what)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"[{name}] interrupted; rerun to resume", file=sys.stderr)
        sys.exit(130)
    took = time.perf_counter() - start
    print(f"[{name}] done in {took:.1f}s" + (f": {summary}" if summary else ""))
