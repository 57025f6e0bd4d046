"""Users read before their batch: a user the writer has not met recently is
read (from its latest snapshot, plus the events after it) as soon as its
command arrives, on a connection of its own, while the batch before runs, and
put in the writer's cache. Its batch then finds it there and, under the table
lock, reads only what was appended since, as it does for every user.

Over many users most commands are a user's first since the process started
(a million users do not fit in memory); without this, each batch would read
its users' histories holding the lock that every writer waits for.

It is only a head start: whatever it read is brought up to date under the
lock before anything is decided, so what it finds may be as old as it likes,
and it never replaces a user the cache already holds (the writer's own is
never older). A user it could not read (the database away, a history this
release cannot read) is read by its batch, as before, and refused there if
need be.
"""

from __future__ import annotations

import asyncio
import logging

from ledger.application import Ledger
from ledger.db import Database
from ledger.domain import User
from ledger.writer import loading
from ledger.writer.cache import UserCache
from ledger.writer.connection import Connection

log = logging.getLogger(__name__)

#: Users read in one round of queries.
MOST_AT_ONCE = 500


class Warmer:
    """Reads the users it is asked for into `cache`, many at a time, off the lock."""

    def __init__(self, ledger: Ledger, database: Database, cache: UserCache) -> None:
        self.ledger = ledger
        self.database = database
        self.cache = cache
        self._wanted: dict[str, asyncio.Future[None]] = {}
        self._reading: dict[str, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._conn = Connection(database)
        self._closed = False

    def read(self, user_id: str) -> asyncio.Future[None] | None:
        """Start reading a user the cache does not hold; the future is done
        when it is read (into the cache), or found absent, or could not be.
        None when there is nothing to wait for."""
        if self._closed:
            return None
        future = self._wanted.get(user_id) or self._reading.get(user_id)
        if future is None:
            loop = asyncio.get_running_loop()
            future = self._wanted[user_id] = loop.create_future()
            if self._task is None:
                self._task = loop.create_task(self._run(), name="ledger-warmer")
        return future

    async def _run(self) -> None:
        try:
            while self._wanted and not self._closed:
                ids = list(self._wanted)[:MOST_AT_ONCE]
                self._reading = {uid: self._wanted.pop(uid) for uid in ids}
                try:
                    await self._read(ids)
                except Exception as e:  # their batches read them
                    log.info("reading users ahead of their batch failed: %s", e)
                    await self._conn.drop()
                finally:
                    _finish(self._reading)
                    self._reading = {}
        finally:
            self._task = None

    async def _read(self, ids: list[str]) -> None:
        conn = await self._conn.get()
        users: dict[str, User | None] = dict.fromkeys(ids)
        unreadable = await loading.bring_up_to_date(conn, self.ledger, users, ids, quiet=True)
        for user_id, user in users.items():
            if user is not None and user_id not in unreadable and self.cache.peek(user_id) is None:
                self.cache.put(user)

    async def stop(self) -> None:
        self._closed = True
        _finish(self._wanted)
        self._wanted.clear()
        task = self._task
        if task is not None:
            await task
        await self._conn.drop()


def _finish(futures: dict[str, asyncio.Future[None]]) -> None:
    for future in futures.values():
        if not future.done():
            future.set_result(None)
