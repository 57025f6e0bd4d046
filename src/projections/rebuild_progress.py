"""What a rebuild reports as it goes, and how it checks the tables it wrote:
its progress, its result, and a digest of rows that does not depend on how
they were read."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import orjson


@dataclass
class Progress:
    phase: str
    position: int = 0
    target: int = 0
    events: int = 0
    users: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.events / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        rate = self.rate
        return max(self.target - self.events, 0) / rate if rate > 0 else None

    def as_dict(self) -> dict[str, Any]:
        eta = self.eta
        return {
            "phase": self.phase,
            "position": self.position,
            "target": self.target,
            "events": self.events,
            "users": self.users,
            "events_per_second": round(self.rate, 1),
            "eta_seconds": None if eta is None else round(eta, 1),
        }


@dataclass(frozen=True)
class RebuildResult:
    version: str
    users: int
    events: int
    position: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def row_digest(row: tuple[Any, ...]) -> int:
    """A digest of a row's values that does not depend on how they were read."""
    normalized = tuple(_normal(v) for v in row)
    return int.from_bytes(hashlib.blake2b(repr(normalized).encode(), digest_size=8).digest())


def _normal(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, dict | list):  # jsonb, read back
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    if isinstance(value, str) and value[:1] in "{[":  # jsonb, as written
        try:
            return orjson.dumps(orjson.loads(value), option=orjson.OPT_SORT_KEYS).decode()
        except orjson.JSONDecodeError:
            return value
    return value


@dataclass
class Digest:
    """Rows counted and summed by digest: what a rebuild wrote, or read back."""

    users: int = 0
    grants: int = 0
    checksum: int = 0

    def add_user(self, row: tuple[Any, ...]) -> None:
        self.users += 1
        self.checksum = (self.checksum + row_digest(row)) % 2**64

    def add_grant(self, row: tuple[Any, ...]) -> None:
        self.grants += 1
        self.checksum = (self.checksum + row_digest(("grant", *row))) % 2**64

    def __str__(self) -> str:
        return f"{self.users} users and {self.grants} grants, checksum {self.checksum:016x}"
