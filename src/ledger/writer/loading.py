"""What a batch reads under the events table's lock, before it decides: the
stored outcomes of its idempotency keys, and its users brought up to date
(from the cache or their latest snapshot, plus whatever other processes
appended since). What else it reads is in ledger.writer.recorded."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, cast

import psycopg

from ledger import events_table, idempotency, snapshots
from ledger.application import Ledger
from ledger.domain import User
from ledger.errors import HistoryUnreadable
from ledger.idempotency import IdempotencyKey, StoredOutcome

log = logging.getLogger(__name__)


async def stored_outcomes(
    conn: psycopg.AsyncConnection[Any], keys: Sequence[IdempotencyKey]
) -> dict[IdempotencyKey, StoredOutcome]:
    if not keys:
        return {}
    cursor = await conn.execute(idempotency.LOOKUP, idempotency.lookup_params(keys))
    return idempotency.stored(await cursor.fetchall())


async def bring_up_to_date(
    conn: psycopg.AsyncConnection[Any],
    ledger: Ledger,
    users: dict[str, User | None],
    cold: Sequence[str],
    *,
    quiet: bool = False,
) -> dict[str, HistoryUnreadable]:
    """Each of `users` as its stream now ends (in place): those not cached
    (`cold`) from their latest snapshot, not from their first event; then
    every event appended since. Returns the users whose history this release
    cannot read, and why; their commands are refused alone (and, unless
    `quiet`, it is logged)."""
    if cold:
        cursor = await conn.execute(snapshots.LATEST, (list(cold),))
        for (data,) in await cursor.fetchall():
            state = snapshots.decode(bytes(data))
            if state is not None:
                users[state.id] = User.from_state(state)
    versions = [u.version if u is not None else 0 for u in users.values()]
    cursor = await conn.execute(events_table.NEWER_THAN, (list(users), versions))
    return _fast_forward(ledger, users, await cursor.fetchall(), quiet)


def _fast_forward(
    ledger: Ledger, users: dict[str, User | None], rows: list[tuple[Any, ...]], quiet: bool
) -> dict[str, HistoryUnreadable]:
    unreadable: dict[str, HistoryUnreadable] = {}
    for user_id, version, topic, state in rows:
        if user_id in unreadable:
            continue
        try:
            event = ledger.decode_row(user_id, version, topic, state)
            users[user_id] = cast(User | None, event.mutate(users[user_id]))
        except HistoryUnreadable as e:
            unreadable[user_id] = e
        except Exception as e:
            unreadable[user_id] = HistoryUnreadable.of(user_id, version, topic, e, applied=True)
        if user_id in unreadable and not quiet:
            log.error("%s", unreadable[user_id].detail)
    for user_id in unreadable:
        users[user_id] = None  # never cached, never decided on
    return unreadable
