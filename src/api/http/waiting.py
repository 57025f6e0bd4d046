"""Read-your-writes: wait until the projection has applied a position.

The projector NOTIFYs its new position on every commit; one listening connection
per process wakes every waiter within milliseconds. A poll of the tracking
position every 250 ms covers a notification lost with a dropped connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from psycopg.rows import DictRow
from starlette.exceptions import HTTPException

from ledger.db import Database
from projections import status as st

if TYPE_CHECKING:
    from api.bootstrap import Services

FetchOne = Callable[[str, tuple[Any, ...]], Awaitable[DictRow | None]]

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25


class PositionWatcher:
    def __init__(self, database: Database, fetch_one: FetchOne, name: str) -> None:
        self.database = database
        self.fetch_one = fetch_one
        self.name = name
        self.position = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_for(self, position: int, within: float) -> bool:
        """True once the projection has applied `position`; False after `within` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        if self.position < position:
            await self._refresh()
        while self.position < position:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), min(remaining, POLL_SECONDS))
            except TimeoutError:
                await self._refresh()
        return True

    def _advance(self, position: int) -> None:
        if position > self.position:
            self.position = position
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def _refresh(self) -> None:
        row = await self.fetch_one(st.SELECT_POSITION, (self.name,))
        if row and row["notification_id"] is not None:
            self._advance(int(row["notification_id"]))

    async def _listen(self) -> None:
        while True:
            try:
                async with await self.database.connect_async() as conn:
                    await conn.execute(f"LISTEN {st.POSITION_CHANNEL}")
                    await self._refresh()
                    async for notify in conn.notifies():
                        if notify.payload.isdigit():
                            self._advance(int(notify.payload))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.debug("position listener reconnecting: %s", e)
                await asyncio.sleep(1.0)


async def wait_for_projection(services: Services, min_position: int | None) -> None:
    """Read-your-writes: until the projection has applied `min_position` (on
    the read replica too, with one), up to LEDGER_WAIT_TIMEOUT_SECONDS; then
    504 projection-timeout."""
    if min_position is None:
        return
    if not await services.reads.reached(min_position, services.settings.wait_timeout_seconds):
        raise HTTPException(
            504, f"the projection has not reached position {min_position} yet; retry later"
        )
