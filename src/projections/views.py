"""The shapes the outside world sees of events and users, as plain JSON-ready
dicts (times as RFC 3339, by ledger.times). The API answers with them, the CLI
prints them, the audit compares them, and the writer stores a command's answer
in them (`present`), as it was first shown."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

from ledger.domain import EVENT_TYPES, Hold, UserEvent, UserState
from ledger.domain.balance import BALANCES
from ledger.times import parse_timestamp, timestamp
from projections.users import USER_COLUMNS

__all__ = [
    "event_id",
    "event_view",
    "hold_view",
    "parse_timestamp",
    "present",
    "row_view",
    "timestamp",
    "user_view",
]

_EVENT_IDS = uuid.UUID("5d1c0f8e-3b0a-4c55-9a8e-1f3f4c2b7a10").bytes


def event_id(user_id: str, version: int) -> str:
    """A stable id for the event at `version` of a user's stream: the name-based
    UUID (version 5, RFC 9562) of "user_id/version", made without uuid.uuid5's
    overhead, since every event shown needs one."""
    name = _EVENT_IDS + f"{user_id}/{version}".encode()
    digest = bytearray(hashlib.sha1(name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_METADATA = ("actor_role", "actor_key_id", "request_id", "idempotency_key")


def _shown(value: Any) -> Any:
    """A value as JSON shows it: times as RFC 3339."""
    return timestamp(value) if isinstance(value, datetime) else value


def event_view(event: UserEvent, position: int) -> dict[str, Any]:
    cause = event.cause or {}
    metadata = {name: cause.get(name) for name in _METADATA}
    metadata.update((k, v) for k, v in cause.items() if k not in metadata)
    return {
        "id": event_id(event.originator_id, event.originator_version),
        "type": EVENT_TYPES[type(event)],
        "user_id": event.originator_id,
        "version": event.originator_version,
        "position": position,
        "recorded_at": timestamp(event.timestamp),
        "data": {name: _shown(value) for name, value in event.data.items()},
        "metadata": metadata,
    }


_EXPIRING = [(kind, *kind.next_expiry) for kind in BALANCES]


def user_view(state: UserState, position: int) -> dict[str, Any]:
    """A User: the users table's columns, in its order."""
    expiring: dict[str, Any] = {}
    for kind, at_name, amount_name in _EXPIRING:
        at, amount = state.next_expiry(kind)
        expiring[at_name] = None if at is None else timestamp(at)
        expiring[amount_name] = amount
    expiring["position"] = position
    return {
        name: expiring[name] if name in expiring else _shown(getattr(state, name))
        for name in USER_COLUMNS
    }


#: What a User shows for a column a users table of the previous release lacks.
_NOT_YET = {"free_credits_held": 0, "free_chat_messages_held": 0}


def row_view(row: dict[str, Any]) -> dict[str, Any]:
    """A User, from a users row as the API reads it (USER_COLUMNS; a row of the
    previous release's table shows nothing held and nothing expiring)."""
    return {name: _shown(row.get(name, _NOT_YET.get(name))) for name in USER_COLUMNS}


def hold_view(user_id: str, hold: Hold) -> dict[str, Any]:
    return {
        "id": hold.id,
        "user_id": user_id,
        "balance": hold.balance.value,
        "amount": hold.amount,
        "status": str(hold.status),
        "reason": hold.reason,
        "created_at": timestamp(hold.created_at),
        "expires_at": timestamp(hold.expires_at),
        "settled_amount": hold.settled_amount,
        "closed_at": _shown(hold.closed_at),
    }


def present(event: UserEvent, state: UserState, position: int) -> dict[str, Any]:
    """A command's answer: its event, its user right after it, and the hold it
    placed or closed, if any."""
    body: dict[str, Any] = {}
    hold_id = getattr(event, "hold_id", None)
    hold = state.hold(hold_id) if isinstance(hold_id, str) else None
    if hold is not None:
        body["hold"] = hold_view(state.id, hold)
    body["event"] = event_view(event, position)
    body["user"] = user_view(state, position)
    return body
