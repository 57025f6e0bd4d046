"""Holds: an amount reserved before an AI reply, settled at what it cost, or
released; one state machine, open -> settled | released | expired, resolved once.

From its `expires_at` on, an open hold counts as released for every decision,
whether or not its HoldExpired event is recorded yet (ledger.domain.due).
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from ledger.domain.balance import Balance
from ledger.domain.grants import Part

DEFAULT_TTL_SECONDS = 900
MIN_TTL_SECONDS = 1
MAX_TTL_SECONDS = 86_400


class HoldStatus(StrEnum):
    OPEN = "open"
    SETTLED = "settled"
    RELEASED = "released"
    EXPIRED = "expired"


class Hold(NamedTuple):
    id: str
    balance: Balance
    amount: int
    reason: str | None
    created_at: datetime
    expires_at: datetime
    #: What it holds of each grant it drew from.
    grants: tuple[Part, ...]
    status: str = HoldStatus.OPEN
    settled_amount: int | None = None
    closed_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.status == HoldStatus.OPEN


def hold_id(user_id: str, scope: str | None = None) -> str:
    """A new hold's id: derived from `scope` (who asked, and their idempotency
    key), so that a retried placement names the same hold; else random. The
    user's id is part of it, so the same key names another hold for another
    user, and no id says anything of another user's holds."""
    if scope is None:
        return "hold_" + os.urandom(12).hex()
    return "hold_" + hashlib.sha256(f"hold/{user_id}/{scope}".encode()).hexdigest()[:24]
