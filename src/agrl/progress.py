"""Progress that shows where people look: a bar on a terminal, plain lines in a log.

On a terminal (stderr is a TTY) a rich bar with the count, the elapsed time and the time left. In a log
(stderr redirected, a pipe, a job's stderr file) a bar draws nothing useful, so one line is written every
`every_s` seconds or every tenth of the total, whichever comes first, and one when the work ends:

    score: 4,000/19,011 (21%), 63.2/s, elapsed 0:01:03, ETA 0:03:57
    score: 19,011/19,011 (100%), 64.0/s, done in 0:04:57
    train: 7/96 (7%) steps, 21.1 s each, elapsed 0:02:28, ETA 0:31:27

`agrl eval`, `agrl score`, `agrl compare` (through `progress`) and training (train/common.ProgressLines,
through `Meter`) share it.

    with progress("score", total=len(records)) as advance: ...; advance(len(batch))
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TextIO

EVERY_S = 30.0  # a log line at least this often while work goes on
SHARES = 10  # and one every tenth of a known total


def clock_text(seconds: float) -> str:
    """0:04:02 for 242.4 s (whole seconds, as rich shows them)."""
    return str(timedelta(seconds=int(max(0.0, seconds))))


class Meter:
    """Counts done items and writes a progress line when one is due (`every_s` seconds passed, or another
    tenth of `total` done). `done` may be set absolutely (`update`) or advanced (`advance`)."""

    def __init__(self, what: str, total: int | None = None, unit: str = "", stream: TextIO | None = None,
                 every_s: float = EVERY_S, start: int = 0, clock: Callable[[], float] = time.monotonic):
        self.what, self.total, self.unit, self.every_s, self.clock = what, total, unit, every_s, clock
        self.stream = stream or sys.stderr
        self.done = self.start = start  # a resumed run starts past 0; its rate counts this run's work only
        self.began = self.last_at = clock()
        self.last_share = self._share()

    def _share(self) -> int:
        return self.done * SHARES // self.total if self.total else 0

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def update(self, done: int) -> None:
        self.done = done
        now = self.clock()
        if self.total and done >= self.total:
            return  # close() writes the last line, with the whole time
        if now - self.last_at >= self.every_s or self._share() > self.last_share:
            self.write(now)

    def line(self, now: float | None = None, final: bool = False) -> str:
        now = self.clock() if now is None else now
        elapsed = now - self.began
        rate = (self.done - self.start) / elapsed if elapsed > 0 else 0.0
        count = f"{self.done:,}" + (f"/{self.total:,} ({100 * self.done // self.total}%)" if self.total else "")
        pace = f"{rate:.1f}/s" if rate >= 1 or rate == 0 else f"{1 / rate:.1f} s each"  # slow steps: 0.0/s says nothing
        text = f"{self.what}: {count}{' ' + self.unit if self.unit else ''}, {pace}"
        if final:
            return f"{text}, done in {clock_text(elapsed)}"
        text += f", elapsed {clock_text(elapsed)}"
        if self.total and rate > 0:
            text += f", ETA {clock_text((self.total - self.done) / rate)}"
        return text

    def write(self, now: float | None = None, final: bool = False) -> None:
        now = self.clock() if now is None else now
        print(self.line(now, final), file=self.stream, flush=True)
        self.last_at, self.last_share = now, self._share()

    def close(self) -> None:
        self.write(final=True)


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


@contextmanager
def progress(what: str, total: int | None = None, enabled: bool = True,
             stream: TextIO | None = None) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`: a rich bar on a terminal, log lines otherwise (see the module doc); nothing
    when not `enabled` (`agrl run` shows its own). The final line is written only when the work finished."""
    if not enabled:
        yield lambda n=1: None
        return
    if not is_terminal(stream):
        meter = Meter(what, total, stream=stream)
        yield meter.advance
        meter.close()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(file=stream or sys.stderr)) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n=1: bar.advance(task, n)
