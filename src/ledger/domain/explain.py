"""Balances in numbers and words, from the state the one fold left: what a
refusal for an insufficient balance says, and (ledger.domain.explain.explain)
what `GET /v1/users/{id}/explain` shows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ledger.domain import grants as lots
from ledger.domain.balance import Balance
from ledger.domain.state import UserState
from ledger.errors import InsufficientBalance
from ledger.times import timestamp


def expiring(state: UserState, kind: Balance) -> dict[str, Any] | None:
    """What of `kind` expires next: when, and how much."""
    at, amount = lots.next_expiry(state.grants, kind)
    return None if at is None else {"at": timestamp(at), "amount": amount}


def next_allowance_at(state: UserState, kind: Balance, now: datetime) -> str | None:
    allowance = state.allowance(kind)
    return None if allowance is None else timestamp(allowance.next_reset(now))


def insufficient(
    state: UserState, kind: Balance, amount: int, now: datetime, verb: str
) -> InsufficientBalance:
    """The refusal of a spend or a hold of `amount`, with the facts behind it."""
    available = lots.available(state.grants, kind, now)
    return InsufficientBalance(
        f"{kind.value} is {available:,}; cannot {verb} {amount:,}",
        facts={
            "balance": kind.value,
            "requested": amount,
            "available": available,
            "held": state.held(kind),
            "shortfall": amount - available,
            "next_allowance_at": next_allowance_at(state, kind, now),
            "expiring": expiring(state, kind),
        },
    )
