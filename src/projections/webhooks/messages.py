"""What an endpoint hears of an event: the message types it makes, and each
message's body. Pure: the outbox hands in the event and the user's state
before and after it (both by the one fold), nothing here reads a database.

Every event makes one message of its own type; an event that leaves an
available balance at 0 (from above it) makes `balance.depleted` too, and one
that takes it from at or above an endpoint's `low_balance_threshold` to below
it makes `balance.low`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from ledger.domain import UserEvent, UserState
from ledger.domain import event_type as logged_type
from ledger.domain.balance import BALANCES, Balance
from ledger.times import timestamp
from projections.views import event_view, user_view

#: Each event type's message type (Standard Webhooks' dotted names).
MESSAGE_TYPES = {
    "UserRegistered": "user.registered",
    "UserImported": "user.imported",
    "CreditsGranted": "credits.granted",
    "CreditsSpent": "credits.spent",
    "CreditsExpired": "credits.expired",
    "ChatMessagesGranted": "chat_messages.granted",
    "ChatMessagesSpent": "chat_messages.spent",
    "ChatMessagesExpired": "chat_messages.expired",
    "HoldPlaced": "hold.placed",
    "HoldSettled": "hold.settled",
    "HoldReleased": "hold.released",
    "HoldExpired": "hold.expired",
    "PlanChanged": "plan.changed",
    "AllowanceSet": "allowance.set",
    "AllowanceRemoved": "allowance.removed",
    "AllowanceGranted": "allowance.granted",
    "PurchaseCompleted": "purchase.completed",
    "PurchaseRefunded": "purchase.refunded",
    "PurchaseDisputed": "purchase.disputed",
    "DisputeReinstated": "dispute.reinstated",
}
DEPLETED = "balance.depleted"
LOW = "balance.low"
#: Every type an endpoint may subscribe to ("*" is all of them).
ALL_TYPES = (*MESSAGE_TYPES.values(), DEPLETED, LOW)


@dataclass(frozen=True, slots=True)
class Message:
    """One message of an event, before it is addressed to an endpoint."""

    type: str
    balance: Balance | None = None  # for balance.depleted and balance.low
    threshold: int | None = None  # for balance.low


def event_type(event: UserEvent) -> str:
    name = logged_type(event)
    return MESSAGE_TYPES.get(name, name)


def messages_of(
    event: UserEvent, before: UserState | None, after: UserState, threshold: int | None
) -> list[Message]:
    """The messages `event` makes for an endpoint with `threshold`."""
    found = [Message(event_type(event))]
    if before is None:
        return found
    for kind in BALANCES:
        was, now = before.balance(kind), after.balance(kind)
        if was is None or now is None:
            continue
        if was > 0 and now == 0:
            found.append(Message(DEPLETED, kind))
        if threshold is not None and was >= threshold > now:
            found.append(Message(LOW, kind, threshold))
    return found


def subscribed(event_types: list[str], message_type: str) -> bool:
    return "*" in event_types or message_type in event_types


def message_id(endpoint_id: str, position: int, message: Message) -> str:
    """The message's `webhook-id`: the same for the same endpoint, event and
    type, however often the outbox meets it."""
    balance = message.balance.value if message.balance else ""
    name = f"{endpoint_id}/{position}/{message.type}/{balance}".encode()
    return "msg_" + hashlib.sha256(name).hexdigest()[:32]


def body(message: Message, event: UserEvent, after: UserState, position: int) -> str:
    """`{"type", "timestamp", "data": {"event", "user"}}`: the exact text signed."""
    data: dict[str, Any] = {
        "event": event_view(event, position),
        "user": user_view(after, position),
    }
    if message.balance is not None:
        data["balance"] = message.balance.value
    if message.threshold is not None:
        data["threshold"] = message.threshold
    shown = {"type": message.type, "timestamp": timestamp(event.timestamp), "data": data}
    return orjson.dumps(shown).decode()
