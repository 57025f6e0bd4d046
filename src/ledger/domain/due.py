"""What time alone does to a user: holds and grants expiring at their instant,
allowances granting each period. One step at a time, earliest first, each
applied before the next is looked for (a hold given back before its grant
expires expires with it). The writer records the steps due before it decides
a command, in the same transaction; the expiry worker records them for users
with no traffic; reads of a past time apply them without recording."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from ledger.domain import balance_events, hold_events
from ledger.domain.allowances import Period, period_at
from ledger.domain.balance import Balance
from ledger.domain.events import UserEvent
from ledger.domain.grants import derived_id
from ledger.domain.rules import MAX_BALANCE
from ledger.domain.state import UserState


class Step(NamedTuple):
    """An event time brings, at `moment`: its class and fields."""

    moment: datetime
    event_class: type[UserEvent]
    fields: dict[str, Any]


def next_step(state: UserState, now: datetime) -> Step | None:
    """The earliest thing due at or before `now`, if any."""
    steps: list[tuple[datetime, int, Step]] = []
    for hold in state.holds:
        if hold.is_open and hold.expires_at <= now:
            fields = {"hold_id": hold.id, "amount": hold.amount, "expired_at": hold.expires_at}
            steps.append(
                (hold.expires_at, 0, Step(hold.expires_at, hold_events.HoldExpired, fields))
            )
    for grant in state.grants:
        if grant.remaining and grant.expires_at is not None and grant.expires_at <= now:
            fields = {
                "grant_id": grant.id,
                "amount": grant.remaining,
                "expired_at": grant.expires_at,
            }
            step = Step(grant.expires_at, balance_events.EXPIRED[grant.balance], fields)
            steps.append((grant.expires_at, 1, step))
    for allowance in state.allowances:
        due = allowance.period_end or allowance.anchor
        if due > now:
            continue
        start, end = period_at(allowance.anchor, Period(allowance.period), now)
        kind = allowance.balance
        # Never past the balance limit: what the limit leaves, at most.
        room = MAX_BALANCE - (state.balance(kind) or 0) - state.held(kind)
        fields = {
            "balance": kind.value,
            "amount": max(0, min(allowance.amount, room)),
            "period_start": start,
            "period_end": end,
            "grant_id": allowance_grant_id(state.id, kind, allowance.anchor, start),
        }
        steps.append((start, 2, Step(start, balance_events.AllowanceGranted, fields)))
    if not steps:
        return None
    return min(steps, key=lambda s: (s[0], s[1]))[2]


def allowance_grant_id(user_id: str, kind: Balance, anchor: datetime, start: datetime) -> str:
    """One grant per (allowance, period): its id says which."""
    return derived_id(user_id, "allowance", kind.value, anchor.isoformat(), start.isoformat())
