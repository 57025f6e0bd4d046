"""The one connection a writer (or its read-ahead) works on, opened when
first needed and again after it was dropped."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import psycopg

from ledger.db import Database, cannot_reach
from ledger.errors import DatabaseUnavailable

#: After failing to connect, answer "unavailable" at once for this long.
RECONNECT_BACKOFF = 0.5


class Connection:
    """A connection of its own to `database`, with `settings` (as for
    Database.connect_async) applied to its session."""

    def __init__(self, database: Database, *settings: str) -> None:
        self.database = database
        self.settings = settings
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._unavailable_until = 0.0

    async def get(self) -> psycopg.AsyncConnection[Any]:
        """The open connection, or a new one; DatabaseUnavailable if it
        cannot be had (at once, for RECONNECT_BACKOFF after a failure)."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        if time.monotonic() < self._unavailable_until:
            raise DatabaseUnavailable("the database cannot be reached")
        try:
            self._conn = await self.database.connect_async(*self.settings)
        except psycopg.Error as e:
            self._unavailable_until = time.monotonic() + RECONNECT_BACKOFF
            raise cannot_reach(e) from e
        return self._conn

    async def drop(self) -> None:
        """Close it (whatever state it is in); the next `get` opens another."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()
