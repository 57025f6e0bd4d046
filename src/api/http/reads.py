"""The API's own reads of the projected tables, on an async connection pool (a
read replica's, with LEDGER_READ_DATABASE_URL), and the watcher of the
projection's position that read-your-writes waits on.

A replica that cannot be reached is not a reason to fail a read: it goes to the
primary instead. A replica that is behind is not a reason to read stale: a read
with `min_position` waits until the replica has applied it too (`reached`)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import psycopg
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from api.http.waiting import PositionWatcher
from ledger.db import REPLICA_CONNECT_TIMEOUT, Database, cannot_reach
from ledger.errors import DatabaseUnavailable
from projections.status import SELECT_POSITION

log = logging.getLogger(__name__)

#: Seconds a read of one row may take before the caller hears 503. (When it
#: runs out, psycopg tries to cancel the query on the server, for up to 10 s more.)
READ_DEADLINE = 5.0

#: Seconds between looks at a replica's position, while a read waits for it.
REPLICA_POLL_SECONDS = 0.005
#: Seconds reads go to the primary after the replica could not be reached.
REPLICA_RETRY_SECONDS = 2.0

#: A query's parameters: by position, or by name.
Params = tuple[Any, ...] | dict[str, Any]


class Reads:
    def __init__(
        self,
        database: Database,
        projection: str,
        pool_size: int,
        replica: Database | None = None,
    ) -> None:
        self.projection = projection
        self.primary = database.async_read_pool(pool_size)
        self.replica = (
            replica.async_read_pool(pool_size, timeout=REPLICA_CONNECT_TIMEOUT)
            if replica is not None
            else None
        )
        self.watcher = PositionWatcher(database, self._fetch_primary, projection)
        self._replica_away_until = 0.0

    async def open(self) -> None:
        await self.primary.open(wait=False)
        if self.replica is not None:
            await self.replica.open(wait=False)
        self.watcher.start()

    async def close(self) -> None:
        await self.watcher.stop()
        if self.replica is not None:
            await self.replica.close()
        await self.primary.close()

    async def reached(self, position: int, within: float) -> bool:
        """Whether the reads' database has applied `position` within `within`
        seconds: the primary's projection (the watcher hears it at once), then,
        with a replica, the replica's copy of it (polled: notifications do not
        reach replicas). A replica that cannot be reached counts as reached:
        the reads go to the primary, which has."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        if not await self.watcher.wait_for(position, within):
            return False
        if self.replica is None or time.monotonic() < self._replica_away_until:
            return True
        while True:
            try:
                rows = await self._fetch(self.replica, SELECT_POSITION, (self.projection,), True)
            except DatabaseUnavailable:
                self._replica_away_until = time.monotonic() + REPLICA_RETRY_SECONDS
                return True
            applied = rows[0]["notification_id"] if rows else None
            if applied is not None and int(applied) >= position:
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(REPLICA_POLL_SECONDS)

    async def fetch_one(self, query: str, params: Params) -> DictRow | None:
        """One row of a read (see `fetch`)."""
        rows = await self.fetch(query, params, one=True)
        return rows[0] if rows else None

    async def fetch_all(self, query: str, params: Params) -> list[DictRow]:
        """Every row of a read (see `fetch`)."""
        return await self.fetch(query, params)

    async def fetch(self, query: str, params: Params, *, one: bool = False) -> list[DictRow]:
        """The rows of a read: from the replica, if there is one and it can be
        reached; else from the primary (and, for a moment, without trying the
        replica again: each try would wait for a connection)."""
        if self.replica is not None and time.monotonic() >= self._replica_away_until:
            try:
                return await self._fetch(self.replica, query, params, one)
            except DatabaseUnavailable as e:
                self._replica_away_until = time.monotonic() + REPLICA_RETRY_SECONDS
                log.warning("the read replica cannot be reached; reading the primary: %s", e)
        return await self._fetch(self.primary, query, params, one)

    async def _fetch_primary(self, query: str, params: Params) -> DictRow | None:
        rows = await self._fetch(self.primary, query, params, True)
        return rows[0] if rows else None

    async def _fetch(
        self,
        pool: AsyncConnectionPool[psycopg.AsyncConnection[DictRow]],
        query: str,
        params: Params,
        one: bool,
    ) -> list[DictRow]:
        """When PostgreSQL restarts, every pooled connection is dead: the first
        read to meet one has the pool drop them all, and tries once more on a
        new one. (The pool does not check each connection as it hands it out,
        as the threads' pool does: on this path, a round trip per read is a
        third of the read.)"""
        for attempt in (1, 2):
            connected = False
            try:
                # A server that stops answering (rather than refusing) must not
                # hold the request for ever: a point read takes milliseconds.
                async with asyncio.timeout(READ_DEADLINE), pool.connection() as conn:
                    connected = True
                    cursor = await conn.execute(query, params, prepare=False)
                    if one:
                        row = await cursor.fetchone()
                        return [row] if row is not None else []
                    return await cursor.fetchall()
            except TimeoutError as e:
                raise DatabaseUnavailable("the database did not answer in time") from e
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                if attempt == 2 or not connected:
                    raise cannot_reach(e) from e
                await pool.check()
        raise AssertionError("unreachable")
