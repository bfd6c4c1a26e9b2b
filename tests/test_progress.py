"""Progress bars (pin.progress): a handful of lines in a log, redrawn as usual in a terminal, and
every bar in pin/ is one of them."""
from __future__ import annotations

import io
import re
from pathlib import Path

from pin.progress import LOG_UPDATES, tqdm

ROOT = Path(__file__).resolve().parents[1]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _lines(text: str) -> list[str]:
    """What a log viewer shows: every carriage return or newline starts a line."""
    return [part for part in re.split(r"[\r\n]", text) if part.strip()]


def _run(stream, n=600, **kwargs) -> list[str]:
    bar = tqdm(range(n), desc="train pin", file=stream, **kwargs)
    clock = iter(range(10**6))  # one second per step: a slow run, as training is
    bar._time = lambda: bar.start_t + next(clock)
    for step in bar:
        if step % 10 == 0:
            bar.set_postfix(loss=f"{1 / (step + 1):.3f}")
    return _lines(stream.getvalue())


def test_a_bar_writes_a_handful_of_lines_to_a_log():
    lines = _run(io.StringIO())
    assert len(lines) <= LOG_UPDATES + 3, lines
    assert lines[0].startswith("train pin:   0%") and "600/600" in lines[-1] and "loss=" in lines[-1]


def test_a_resumed_bar_counts_what_is_left():
    log = io.StringIO()
    bar = tqdm(range(400, 600), desc="train", file=log, initial=400, total=600)
    for _ in bar:
        pass
    bar.close()
    assert len(_lines(log.getvalue())) <= LOG_UPDATES + 3


def test_a_bar_of_unknown_length_writes_at_most_once_a_minute():
    log = io.StringIO()
    bar = tqdm(iter(range(600)), desc="decode", file=log)  # no len(): no total
    clock = iter(range(10**6))
    bar._time = lambda: bar.start_t + next(clock)
    for _ in bar:
        pass
    bar.close()
    assert len(_lines(log.getvalue())) <= 600 // 60 + 3


def test_a_terminal_still_gets_a_redrawn_bar():
    assert len(_run(Terminal())) >= 600  # tqdm's own pace: every step (each 1 s > 0.1 s) and each postfix


def test_every_bar_in_pin_is_the_quiet_one():
    direct = [str(p.relative_to(ROOT)) for p in (ROOT / "pin").rglob("*.py")
              if p.name != "progress.py" and re.search(r"^\s*(from tqdm|import tqdm)", p.read_text(), re.M)]
    assert not direct, f"modules using tqdm directly (use pin.progress.tqdm): {direct}"
