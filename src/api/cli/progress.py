"""A progress bar for long commands, on stderr: on a terminal it redraws one
line; piped, it prints a line every few seconds. Results go to stdout."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class ProgressBar:
    def __init__(self, label: str, unit: str = "events", stream: TextIO | None = None) -> None:
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.started = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def update(self, done: int, total: int, note: str = "") -> None:
        now = time.monotonic()
        if now - self._last < (0.1 if self.interactive else 5.0):
            return
        self._last = now
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = _duration((total - done) / rate) if rate > 0 and total >= done else "?"
        fraction = min(done / total, 1.0) if total else 1.0
        filled = int(fraction * 30)
        bar = "#" * filled + "." * (30 - filled)
        line = (
            f"{self.label} [{bar}] {fraction:4.0%} {done:,}/{total:,} {self.unit} "
            f"{rate:,.0f}/s ETA {eta}{(' ' + note) if note else ''}"
        )
        if self.interactive:
            self.stream.write("\r" + line.ljust(100))
            self._drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self, message: str, *, failed: bool = False) -> None:
        """Clear the bar, then print the outcome (to stdout, or stderr if it failed)."""
        if self._drawn:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()
        print(message, file=sys.stderr if failed else sys.stdout, flush=True)
