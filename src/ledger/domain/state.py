"""A user's state, as the one fold of their events leaves it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from ledger.domain.balance import Balance

#: Changes whenever the fold (an event's `evolve`, or an upcaster) does:
#: snapshots of the state made by another fold are then ignored (see ledger.snapshots).
FOLD_VERSION = 1


class InvariantViolation(Exception):
    """An event cannot follow the state it is applied to. Never happens to events
    recorded by this code; a projector that meets one stops instead of guessing."""


@dataclass(frozen=True, slots=True)
class Cause:
    """Who and what caused an event: never a secret, only its id."""

    actor_role: str | None = None
    actor_key_id: str | None = None
    request_id: str | None = None
    idempotency_key: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "actor_role": self.actor_role,
            "actor_key_id": self.actor_key_id,
            "request_id": self.request_id,
            "idempotency_key": self.idempotency_key,
        }


class UserState(NamedTuple):
    """A user as history leaves them. The totals count every grant and spend ever
    recorded, so that a projection can show them without a second fold.
    (A named tuple: the fold makes one per event, and `_replace` is cheap.)"""

    id: str
    level: str
    renewal_period: str | None
    free_credits: int | None
    free_chat_messages: int | None
    version: int
    updated_at: datetime
    credits_granted_total: int = 0
    credits_spent_total: int = 0
    chat_messages_granted_total: int = 0
    chat_messages_spent_total: int = 0

    def balance(self, kind: Balance) -> int | None:
        value: int | None = getattr(self, kind.value)
        return value

    def total(self, name: str) -> int:
        value: int = getattr(self, name)
        return value
