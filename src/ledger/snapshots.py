"""Snapshots of users' state, so that nothing has to replay a long stream from
its first event: a writer meeting a user it has not cached, or a history page
deep in a stream, starts from the latest snapshot at or before where it needs.

A snapshot is the state the one fold gave at a version, written by the writer
in the same transaction as the event that took the user past a multiple of
EVERY versions. It is a cache of the fold, never a source of truth: audits and
rebuilds replay from the first event. `FOLD_VERSION` (in ledger.domain) changes
whenever the fold does, and snapshots made by another fold are ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from ledger import codec
from ledger.db import Table
from ledger.domain import FOLD_VERSION, UserState

log = logging.getLogger(__name__)

TABLE = "ledger_snapshots"
#: A snapshot every this many events of a user's stream.
EVERY = 1000

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    user_id      text        NOT NULL,
    fold         integer     NOT NULL,
    version      bigint      NOT NULL,
    position     bigint      NOT NULL,  -- global position of the event at that version
    recorded_at  timestamptz NOT NULL,  -- when that event was recorded
    state        bytea       NOT NULL,
    PRIMARY KEY (user_id, fold, version)
)
"""

DEFINITION = Table.of(TABLE, CREATE_TABLE)

#: The latest snapshot of each of some users (whom the caller has not cached).
LATEST = (
    "SELECT s.state FROM unnest(%b::text[]) AS u(id) CROSS JOIN LATERAL ("
    f"SELECT state FROM {TABLE} WHERE user_id = u.id AND fold = {FOLD_VERSION} "
    "ORDER BY version DESC LIMIT 1) AS s"
)

#: The latest snapshot of a user at or before a version and a time.
AT_MOST = (
    f"SELECT state, position FROM {TABLE} WHERE user_id = %s AND fold = {FOLD_VERSION} "
    "AND version <= %s AND recorded_at <= %s ORDER BY version DESC LIMIT 1"
)

STORE = (
    f"INSERT INTO {TABLE} (user_id, fold, version, position, recorded_at, state) "
    f"SELECT u.id, {FOLD_VERSION}, u.version, u.position, u.recorded_at, u.state "
    "FROM unnest(%b::text[], %b::bigint[], %b::bigint[], %b::timestamptz[], %b::bytea[]) "
    "AS u(id, version, position, recorded_at, state) ON CONFLICT DO NOTHING"
)


class Snapshot(NamedTuple):
    """A user's state at a version, and the global position of its last event."""

    state: UserState
    position: int


def crossed(before: int, after: int) -> bool:
    """Whether a stream going from `before` to `after` events is due a snapshot."""
    return after // EVERY > before // EVERY


def encode(state: UserState) -> bytes:
    return codec.encode(state)


def decode(data: bytes) -> UserState | None:
    """The state a snapshot holds, or None if this release cannot read it: the
    caller replays from the events instead (a snapshot is only a cache)."""
    try:
        return codec.decode(data)
    except (ValueError, TypeError, KeyError):
        log.warning("a snapshot cannot be read; replaying instead", exc_info=True)
        return None


def store_params(
    due: Sequence[Snapshot],
) -> tuple[list[str], list[int], list[int], list[datetime], list[bytes]]:
    return (
        [s.state.id for s in due],
        [s.state.version for s in due],
        [s.position for s in due],
        [s.state.updated_at for s in due],
        [encode(s.state) for s in due],
    )
