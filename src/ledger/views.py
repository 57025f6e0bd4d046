"""The shapes the outside world sees of events and users, as plain JSON-ready dicts."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

from ledger.domain import EVENT_TYPES, User, UserState

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


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC at full precision: 2026-01-31T12:00:00.000001Z."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def event_view(event: User.Event, position: int) -> dict[str, Any]:
    cause = event.cause or {}
    return {
        "id": event_id(event.originator_id, event.originator_version),
        "type": EVENT_TYPES[type(event)],
        "user_id": event.originator_id,
        "version": event.originator_version,
        "position": position,
        "recorded_at": timestamp(event.timestamp),
        "data": event.data,
        "metadata": {
            "actor_role": cause.get("actor_role"),
            "actor_key_id": cause.get("actor_key_id"),
            "request_id": cause.get("request_id"),
            "idempotency_key": cause.get("idempotency_key"),
        },
    }


def user_view(state: UserState, position: int) -> dict[str, Any]:
    return {
        "id": state.id,
        "level": state.level,
        "renewal_period": state.renewal_period,
        "free_credits": state.free_credits,
        "free_chat_messages": state.free_chat_messages,
        "version": state.version,
        "position": position,
        "updated_at": timestamp(state.updated_at),
    }
