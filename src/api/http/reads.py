"""The API's own reads of the projected tables, on an async connection pool, and
the watcher of the projection's position that read-your-writes waits on."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg.rows import DictRow

from api.http.waiting import PositionWatcher
from ledger.db import Database, cannot_reach
from ledger.errors import DatabaseUnavailable

#: Seconds a read of one row may take before the caller hears 503. (When it
#: runs out, psycopg tries to cancel the query on the server, for up to 10 s more.)
READ_DEADLINE = 5.0

#: A query's parameters: by position, or by name.
Params = tuple[Any, ...] | dict[str, Any]


class Reads:
    def __init__(self, database: Database, projection: str, pool_size: int) -> None:
        self.pool = database.async_read_pool(pool_size)
        self.watcher = PositionWatcher(database, self.fetch_one, projection)

    async def open(self) -> None:
        await self.pool.open(wait=False)
        self.watcher.start()

    async def close(self) -> None:
        await self.watcher.stop()
        await self.pool.close()

    async def fetch_one(self, query: str, params: Params) -> DictRow | None:
        """One row of a read (see `fetch`)."""
        rows = await self.fetch(query, params, one=True)
        return rows[0] if rows else None

    async def fetch_all(self, query: str, params: Params) -> list[DictRow]:
        """Every row of a read (see `fetch`)."""
        return await self.fetch(query, params)

    async def fetch(self, query: str, params: Params, *, one: bool = False) -> list[DictRow]:
        """The rows of a read. When PostgreSQL restarts, every pooled connection
        is dead: the first read to meet one has the pool drop them all, and
        tries once more on a new one. (The pool does not check each connection
        as it hands it out, as the threads' pool does: on this path, a round
        trip per read is a third of the read.)"""
        for attempt in (1, 2):
            connected = False
            try:
                # A server that stops answering (rather than refusing) must not
                # hold the request for ever: a point read takes milliseconds.
                async with asyncio.timeout(READ_DEADLINE), self.pool.connection() as conn:
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
                await self.pool.check()
        raise AssertionError("unreachable")
