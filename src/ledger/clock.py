"""The ledger's clock, injected wherever time decides something (expiry,
allowances, webhook retries), so that tests move time instead of sleeping."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

#: What tells the time: a function returning an aware datetime.
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


class OffsetFileClock:
    """The system clock, moved by the number of seconds a file holds (read at
    every call): how a test, or a rehearsal of month-end, moves every process
    of a ledger forward at once. A missing or empty file is no offset. Never
    for production."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self) -> datetime:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            text = ""
        return datetime.now(UTC) + timedelta(seconds=float(text) if text else 0.0)


def clock_from(path: Path | None) -> Clock:
    """LEDGER_CLOCK_OFFSET_FILE's clock if set, else the system's."""
    return system_clock if path is None else OffsetFileClock(path)
