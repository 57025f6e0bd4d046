"""Balances in numbers and words, from the state the one fold left: what a
refusal for an insufficient balance says, and (ledger.domain.explain.explain)
what `GET /v1/users/{id}/explain` shows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ledger.domain import grants as lots
from ledger.domain.balance import Balance
from ledger.domain.events import UserEvent
from ledger.domain.state import UserState
from ledger.errors import InsufficientBalance
from ledger.times import timestamp


def expiring(state: UserState, kind: Balance) -> dict[str, Any] | None:
    """What of `kind` expires next: when, and how much."""
    at, amount = state.next_expiry(kind)
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


# -- the whole picture ----------------------------------------------------------------


def explain(state: UserState, now: datetime) -> dict[str, Any]:
    """Each balance of `state` (as time has left it at `now`) in numbers and
    words: available, held and by which holds, the active grants, what expires
    next, the allowance and its next reset."""
    return {kind.value: _balance(state, kind, now) for kind in Balance}


def _balance(state: UserState, kind: Balance, now: datetime) -> dict[str, Any]:
    available = lots.available(state.grants, kind, now)
    holds = state.open_holds(kind)
    grants = sorted(
        (g for g in state.grants if g.balance is kind and g.status == "active"), key=lots.order
    )
    allowance = state.allowance(kind)
    next_expiry = expiring(state, kind)
    words = [f"{available:,} {kind.noun} available"]
    if holds:
        words.append(f"{state.held(kind):,} held by {_count(len(holds), 'open hold')}")
    if next_expiry is not None:
        words.append(f"{next_expiry['amount']:,} expire at {next_expiry['at']}")
    if allowance is not None:
        words.append(
            f"reset to {allowance.amount:,} every {allowance.period} "
            f"(next {timestamp(allowance.next_reset(now))})"
        )
    return {
        "available": available if state.balance(kind) is not None else None,
        "held": state.held(kind),
        "holds": [
            {
                "id": h.id,
                "amount": h.amount,
                "reason": h.reason,
                "expires_at": timestamp(h.expires_at),
            }
            for h in holds
        ],
        "grants": [
            {
                "id": g.id,
                "remaining": g.remaining,
                "held": g.held,
                "priority": g.priority,
                "expires_at": None if g.expires_at is None else timestamp(g.expires_at),
                "source": g.source,
                "reason": g.reason,
            }
            for g in grants
        ],
        "next_expiry": next_expiry,
        "allowance": None
        if allowance is None
        else {
            "amount": allowance.amount,
            "period": allowance.period,
            "next_reset_at": timestamp(allowance.next_reset(now)),
        },
        "summary": "; ".join(words) + ".",
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def sentence(event: UserEvent) -> str:
    """A one-line account of what `event` did, and who did it."""
    data = event.data
    balance = getattr(event, "balance", None)
    noun = (
        balance.noun
        if isinstance(balance, Balance)
        else Balance(balance).noun
        if isinstance(balance, str)
        else "credits"
    )
    match type(event).__name__:
        case "UserRegistered" | "UserImported" as kind:
            how = "registered" if kind == "UserRegistered" else f"imported ({data['level']})"
            text = f"{how} with {_amount(data['free_credits'])} credits and " + (
                f"{_amount(data['free_chat_messages'])} chat messages"
            )
        case "CreditsGranted" | "ChatMessagesGranted":
            text = f"{data['amount']:,} {noun} granted{_why(data)}"
            if data.get("expires_at") is not None:
                text += f", expiring at {timestamp(data['expires_at'])}"
        case "CreditsSpent" | "ChatMessagesSpent":
            text = f"{data['amount']:,} {noun} spent" + (
                f" on {data['reason']}" if data.get("reason") else ""
            )
        case "CreditsExpired" | "ChatMessagesExpired":
            text = f"{data['amount']:,} {noun} expired (grant {data['grant_id']})"
        case "HoldPlaced":
            text = (
                f"{data['amount']:,} {noun} held{_why(data)} until "
                f"{timestamp(data['expires_at'])} (hold {data['hold_id']})"
            )
        case "HoldSettled":
            text = (
                f"hold {data['hold_id']} settled: {data['amount']:,} spent{_why(data)}, "
                f"{data['released']:,} given back"
            )
        case "HoldReleased":
            text = f"hold {data['hold_id']} released: {data['amount']:,} given back"
        case "HoldExpired":
            text = f"hold {data['hold_id']} expired: {data['amount']:,} given back"
        case "PlanChanged":
            period = f" ({data['renewal_period']})" if data.get("renewal_period") else ""
            text = f"plan changed to {data['level']}{period}"
        case "AllowanceSet":
            text = f"allowance set: {data['amount']:,} {noun} every {data['period']}"
        case "AllowanceRemoved":
            text = f"allowance of {noun} stopped"
        case "AllowanceGranted":
            text = (
                f"{data['amount']:,} {noun} for the {_period_of(data)} from "
                f"{timestamp(data['period_start'])}"
            )
        case other:
            text = other
    return text + _by(event.cause or {})


def _amount(value: int | None) -> str:
    return "no" if value is None else f"{value:,}"


def _why(data: dict[str, Any]) -> str:
    return f" ({data['reason']})" if data.get("reason") else ""


def _period_of(data: dict[str, Any]) -> str:
    days = (data["period_end"] - data["period_start"]).days
    return "day" if days <= 1 else "week" if days <= 7 else "month"


def _by(cause: dict[str, Any]) -> str:
    role, key = cause.get("actor_role"), cause.get("actor_key_id")
    if role == "time":
        return ", as time passed"
    if role and key:
        return f" by {role} key {key}"
    return f" by {role}" if role else ""
