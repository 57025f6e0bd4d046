"""A CommandWriter on an event loop of its own, for callers on threads (the
expiry worker, scripts, tests): many threads may submit at once, as many
requests would."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from ledger.application import Ledger
from ledger.commands import Command
from ledger.db import Database
from ledger.domain import Cause
from ledger.idempotency import IdempotencyKey
from ledger.writer.batch import Accepted, Present, Result
from ledger.writer.writer import CommandWriter

T = TypeVar("T")


class ThreadedWriter:
    def __init__(
        self, ledger: Ledger, database: Database, present: Present, **options: Any
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="ledger-writer-loop", daemon=True
        )
        self.thread.start()
        self.writer = CommandWriter(ledger, database, present, **options)
        self._call(self.writer.start())

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def submit(
        self, command: Command, cause: Cause, key: IdempotencyKey | None = None
    ) -> concurrent.futures.Future[Accepted]:
        async def execute() -> Accepted:
            return await self.writer.submit(command, cause, key)

        return asyncio.run_coroutine_threadsafe(execute(), self.loop)

    def execute(
        self, command: Command, cause: Cause, key: IdempotencyKey | None = None
    ) -> Accepted:
        return self.submit(command, cause, key).result(60)

    def execute_together(
        self, commands: Sequence[tuple[Command, Cause]], timeout: float | None = 60
    ) -> list[Result]:
        return self._call(self.writer.execute_together(commands), timeout)

    def stop(self) -> None:
        self._call(self.writer.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def run_together(
    ledger: Ledger,
    database: Database,
    present: Present,
    commands: Sequence[tuple[Command, Cause]],
) -> list[Result]:
    """For scripts: decide and commit `commands` in one transaction."""

    async def main() -> list[Result]:
        writer = CommandWriter(
            ledger, database, present, cache_size=len(commands) + 1, deadline=None
        )
        try:
            return await writer.execute_together(commands)
        finally:
            await writer.stop()

    return asyncio.run(main())
