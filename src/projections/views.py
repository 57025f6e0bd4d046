"""The shapes the outside world sees of events and users, as plain JSON-ready
dicts, and the one way times are written and read (RFC 3339). The API answers
with them, the CLI prints them, the audit compares them, and the writer stores
a command's answer in them (`present`), as it was first shown."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from ledger.domain import EVENT_TYPES, UserEvent, UserState
from projections.users import USER_COLUMNS

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


_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})"
)


def parse_timestamp(text: str) -> datetime:
    """An RFC 3339 date-time, with its offset: 2026-01-31T12:00:00Z,
    2026-01-31T13:00:00.5+01:00. Nothing looser (no bare dates, no missing
    seconds or offset, no Unix times). Digits past the microsecond are dropped,
    which decides nothing: events are recorded to the microsecond. In UTC."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{text[:40]!r} is not an RFC 3339 time with an offset, such as 2026-01-31T12:00:00Z"
        )
    date, time, fraction, offset = match.groups()
    micros = f".{(fraction or '')[:6]:0<6}"
    try:
        moment = datetime.fromisoformat(f"{date}T{time}{micros}{_offset(offset)}")
    except ValueError as e:
        raise ValueError(f"{text[:40]!r} is not a valid time: {e}") from None
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        # Past 9999 or before year 1 once in UTC: as late, or as early, as can be.
        return (datetime.max if moment.year == 9999 else datetime.min).replace(tzinfo=UTC)


def _offset(text: str) -> str:
    return "+00:00" if text in ("Z", "z") else text


def event_view(event: UserEvent, position: int) -> dict[str, Any]:
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
    """A User: the users table's columns, in its order."""
    return {
        name: position
        if name == "position"
        else timestamp(state.updated_at)
        if name == "updated_at"
        else getattr(state, name)
        for name in USER_COLUMNS
    }


def present(
    event: UserEvent, state: UserState, position: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A command's answer: its event, and its user right after it."""
    return event_view(event, position), user_view(state, position)
