"""Reads of the event log for the API and the CLI: a user's stream, every user's
events after a position, and snapshots, decoded by the ledger's application.
On the process's one pool of read connections (ledger.db.Database.read_pool)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

from ledger import events_table, snapshots
from ledger.application import Ledger, Recorded
from ledger.db import translate_errors
from ledger.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

#: Seconds reads go to the fallback after `pool` could not be reached.
RETRY_SECONDS = 2.0


class EventLog:
    """Reads of the log on `pool` (a read replica's, say), or, while that
    cannot be reached, on `fallback` (the primary's)."""

    def __init__(
        self,
        ledger: Ledger,
        pool: ConnectionPool[psycopg.Connection[Any]],
        fallback: ConnectionPool[psycopg.Connection[Any]] | None = None,
    ) -> None:
        self.ledger = ledger
        self.pool = pool
        self.fallback = fallback
        self._away_until = 0.0

    def user_events(
        self,
        user_id: str,
        *,
        after_version: int = 0,
        limit: int | None = None,
        until: datetime | None = None,
    ) -> list[Recorded]:
        """A user's events, oldest first, each with its global position (see
        user_page)."""
        return self.user_page(user_id, after_version=after_version, limit=limit, until=until)[0]

    def user_page(
        self,
        user_id: str,
        *,
        after_version: int = 0,
        limit: int | None = None,
        until: datetime | None = None,
    ) -> tuple[list[Recorded], bool]:
        """A user's events after `after_version`, oldest first, each with its
        global position: at most `limit`, and with `until` only those recorded
        at or before it; and whether more follow. What lies past the page is not
        decoded: it may be an event this release cannot read."""
        fetch = events_table.limit(None if limit is None else limit + 1)
        rows = self._fetch(events_table.OF_USER, (user_id, after_version, fetch))
        events: list[Recorded] = []
        for row in rows:
            if len(events) == limit:
                return events, True
            if until is not None and events_table.recorded_after(bytes(row["state"]), until):
                break  # and so are the rest: times in a stream never go back
            events.append(self._recorded(row))
        return events, False

    def has_events(self, user_id: str) -> bool:
        """Whether the user has a stream at all (nothing is decoded)."""
        return bool(self._fetch(events_table.HAS_EVENTS, (user_id,)))

    def events_after(self, position: int, limit: int) -> tuple[list[Recorded], bool]:
        """Every user's events after a global position, in global order, at most
        `limit`, and whether more follow (the next is not decoded)."""
        rows = self._fetch(events_table.AFTER, (position, events_table.limit(limit + 1)))
        return [self._recorded(row) for row in rows[:limit]], len(rows) > limit

    def snapshot(
        self, user_id: str, *, version: int | None = None, at: datetime | None = None
    ) -> snapshots.Snapshot | None:
        """The latest snapshot of a user at or before a version and a time."""
        newest = datetime.max.replace(tzinfo=UTC)
        most = events_table.NO_LIMIT if version is None else version
        rows = self._fetch(snapshots.AT_MOST, (user_id, most, at or newest))
        state = snapshots.decode(bytes(rows[0]["state"])) if rows else None
        return snapshots.Snapshot(state, rows[0]["position"]) if state is not None else None

    def _fetch(self, query: str, params: Sequence[object]) -> list[DictRow]:
        if self.fallback is None:
            return _rows(self.pool, query, params)
        if time.monotonic() >= self._away_until:
            try:
                return _rows(self.pool, query, params)
            except DatabaseUnavailable as e:
                # For a moment, without trying it again: each try waits.
                self._away_until = time.monotonic() + RETRY_SECONDS
                log.warning("the read replica cannot be reached; reading the primary: %s", e)
        return _rows(self.fallback, query, params)

    def _recorded(self, row: DictRow) -> Recorded:
        event = self.ledger.decode_row(
            row["originator_id"], row["originator_version"], row["topic"], row["state"]
        )
        return Recorded(event, int(row["notification_id"]))


def _rows(
    pool: ConnectionPool[psycopg.Connection[Any]], query: str, params: Sequence[object]
) -> list[DictRow]:
    with translate_errors(), pool.connection() as conn, conn.cursor(row_factory=dict_row) as curs:
        curs.execute(query, params, prepare=True)
        return curs.fetchall()
