"""A progress bar on stderr: redrawn in place on a terminal, a line every tenth otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30  # characters of the bar
REDRAW = 0.2  # seconds between redraws on a terminal


class ProgressBar:
    """Shows how far the running scenario is; ``update`` is cheap to call often."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._label = ""
        self._total = 1
        self._began = 0.0
        self._drawn = 0.0
        self._tenth = -1

    def start(self, label: str, total: int) -> None:
        self._label, self._total, self._began = label, max(1, total), time.monotonic()
        self._drawn, self._tenth = 0.0, -1
        self.update(0)

    def update(self, done: int, note: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        share = min(1.0, done / self._total)
        line = (
            f"{self._label:<11} [{'#' * int(share * WIDTH):<{WIDTH}}] {share * 100:5.1f}% "
            f"{done}/{self._total} {now - self._began:6.1f}s {note}"
        )
        if self.tty:
            if now - self._drawn >= REDRAW or done >= self._total:
                self.stream.write("\r" + line[:120].ljust(120))
                self.stream.flush()
                self._drawn = now
        elif int(share * 10) > self._tenth:
            self._tenth = int(share * 10)
            self.stream.write(line + "\n")
            self.stream.flush()

    def finish(self, note: str = "") -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + " " * 120 + "\r")
        self.stream.write(f"{self._label:<11} done in {time.monotonic() - self._began:.1f}s {note}\n")
        self.stream.flush()
