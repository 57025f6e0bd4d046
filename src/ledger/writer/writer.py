"""Group commit: concurrent commands are decided and saved in one transaction.

Every insert into the events table takes the library's EXCLUSIVE table lock, so
that positions are committed in order and no reader passes over a gap. That lock
serializes writers; paying it (and the WAL flush) once per batch rather than once
per command is what lets the ledger scale.

A batch runs like this, in one transaction:

1. take the table lock (the library's own lock statements, and its NOTIFY);
2. read stored outcomes of the batch's idempotency keys, and what else its
   commands need read under the lock (ledger.writer.recorded: closed holds;
   for a Stripe delivery, decided in a batch of its own, what was received);
3. bring the batch's users up to date: from an in-process cache (or the latest
   snapshot), plus any events other processes appended since (read under the
   lock, so nothing can slip in);
4. decide each command in arrival order against the state left by the ones
   before it, a refused command refusing only itself (ledger.writer.batch,
   pure);
5. insert all new events into the library's events table, encoded by its mapper
   (the same insert as the library's, with one array per column: see
   ledger.events_table.INSERT), then the rows written alongside them
   (ledger.writer.alongside: the outcomes of the batch's idempotency keys, the
   snapshots that are due, the holds, the Stripe events received);
6. commit. Only then is any caller answered.

Because decisions are made under the lock, two processes can never both spend
the last credit: the second sees the first's event when it reads in step 3.

The writer runs on the event loop, on a connection of its own. A batch takes
four round trips (begin and lock, read, insert, commit; one more when it has
idempotency keys, users not cached, or snapshots due), and while it waits for
PostgreSQL the loop goes on accepting requests, which become the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ledger import events_table
from ledger.application import Ledger
from ledger.clock import Clock, system_clock
from ledger.commands import NO_USER, Command
from ledger.db import IDLE_IN_TRANSACTION_TIMEOUT, LOCK_TIMEOUT, Database, unavailable
from ledger.domain import Cause, User
from ledger.errors import DatabaseUnavailable, IdempotencyKeyInUse, LedgerError
from ledger.idempotency import IdempotencyKey
from ledger.writer import loading, recorded
from ledger.writer.alongside import DEFAULT_PARTS, Part, Written
from ledger.writer.batch import Accepted, Decisions, Pending, Present, Result
from ledger.writer.cache import UserCache
from ledger.writer.connection import Connection
from ledger.writer.warming import Warmer

log = logging.getLogger(__name__)

#: Seconds a batch may take, its wait for the lock included. (When it runs out,
#: psycopg tries to cancel the query on the server, for up to 10 s more.)
BATCH_DEADLINE = LOCK_TIMEOUT + 3.0

#: The longest a batch waits for its users to be read ahead of it (then it
#: reads those still missing itself).
READ_AHEAD_WAIT = 0.5


@dataclass(slots=True)
class _Committing:
    sent: bool = False


class CommandWriter:
    """Takes commands on the event loop and commits them in batches."""

    def __init__(
        self,
        ledger: Ledger,
        database: Database,
        present: Present,
        *,
        alongside: Sequence[Part] = DEFAULT_PARTS,
        clock: Clock = system_clock,
        max_batch: int = 500,
        window: float = 0.0005,
        cache_size: int = 50_000,
        on_batch: Callable[[int, float], None] | None = None,
        deadline: float | None = BATCH_DEADLINE,
    ) -> None:
        """`deadline`: seconds a batch may take before its callers are told the
        database is unavailable (it waits for the lock, then for PostgreSQL).
        None for a script's one large transaction (an import), which also
        lifts PostgreSQL's limit on its session idling inside a transaction.
        `present` shows an accepted command as its answer; `alongside` are the
        rows written in each batch's transaction after its events; `clock` is
        read once per batch, under the lock, and decides what time has brought."""
        self.ledger = ledger
        self.present = present
        self.clock = clock
        self.alongside = tuple(alongside)
        self.deadline = deadline
        self.database = database
        self.max_batch = max_batch
        self.window = window
        self._cache = UserCache(cache_size)
        self._warmer = Warmer(ledger, database, self._cache)
        self._on_batch = on_batch
        self._queue: asyncio.Queue[Pending | None] = asyncio.Queue()
        #: A command taken from the queue to be decided alone, in the next batch.
        self._next: Pending | None = None
        self._in_flight: set[IdempotencyKey] = set()
        self._conn = Connection(
            database,
            *(
                [f"idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT}s"]
                if deadline is not None
                else []
            ),
        )
        # The library's lock and notify statements, rendered once, after a BEGIN.
        notify = sql.SQL("NOTIFY {}").format(sql.Identifier(events_table.CHANNEL))
        # Then what the parts written alongside read as the lock is taken.
        self._at_lock = [part.at_lock for part in self.alongside if part.at_lock is not None]
        self._begin = "; ".join(
            ["BEGIN", *ledger.lock_statements, notify.as_string(), *self._at_lock]
        )
        self._saving = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ledger-writer")

    async def stop(self) -> None:
        """Refuse new commands, finish the queued ones, stop."""
        self._closed = True
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
            self._task = None
        await self._warmer.stop()
        await self._conn.drop()

    async def __aenter__(self) -> CommandWriter:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # -- submitting ---------------------------------------------------------

    def submit(
        self, command: Command, cause: Cause, key: IdempotencyKey | None = None
    ) -> asyncio.Future[Accepted]:
        """Queue a command; the future resolves once its batch has committed."""
        pending = Pending(command, cause, key)
        if self._closed:
            pending.future.set_exception(DatabaseUnavailable("the ledger is shutting down"))
            return pending.future
        if key is not None:
            if key in self._in_flight:
                pending.future.set_exception(
                    IdempotencyKeyInUse(
                        "a request with this Idempotency-Key is still being processed"
                    )
                )
                return pending.future
            self._in_flight.add(key)  # until its batch is done (see _commit)
        user_id = command.user_id
        if user_id != NO_USER and self._cache.peek(user_id) is None:
            pending.read_ahead = self._warmer.read(user_id)
        self._queue.put_nowait(pending)
        return pending.future

    async def execute_together(self, commands: Sequence[tuple[Command, Cause]]) -> list[Result]:
        """Decide and commit all `commands` in one transaction: all of their
        events are recorded, or none (an import, a script)."""
        batch = [Pending(command, cause, None) for command, cause in commands]
        return await self._save(batch)

    # -- the batching loop ----------------------------------------------------

    async def _run(self) -> None:
        previous_size = 0
        while True:
            item, self._next = self._next or await self._queue.get(), None
            if item is None:
                return
            batch = [item]
            stop = self._drain(batch)
            if not stop and previous_size > 1 and self.window > 0 and len(batch) < self.max_batch:
                # Busy: let a few more arrive, so the lock and flush serve more.
                await asyncio.sleep(self.window)
                stop = self._drain(batch)
            previous_size = len(batch)
            await self._read_ahead(batch)
            await self._commit(batch)
            if stop:
                return

    @staticmethod
    async def _read_ahead(batch: list[Pending]) -> None:
        """Until the batch's users not in memory have been read, ahead of the
        lock (or READ_AHEAD_WAIT has passed)."""
        waiting = {
            p.read_ahead for p in batch if p.read_ahead is not None and not p.read_ahead.done()
        }
        if waiting:
            await asyncio.wait(waiting, timeout=READ_AHEAD_WAIT)

    def _drain(self, batch: list[Pending]) -> bool:
        """Add whatever is queued, up to a command decided alone (kept for the
        next batch). Returns True if a stop was requested."""
        if batch[0].command.alone or self._next is not None:
            return False
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return False
            if item is None:
                return True
            if item.command.alone:
                self._next = item
                return False
            batch.append(item)
        return False

    async def _commit(self, batch: list[Pending]) -> None:
        started = time.perf_counter()
        try:
            results = await self._save(batch)
        except Exception as e:
            if not isinstance(e, LedgerError):
                log.exception("a batch of %d commands failed", len(batch))
            results = [e] * len(batch)
        finally:
            # Only now may the same key be sent again: it is decided, or it failed.
            # (Not when a caller stops waiting: its command is still queued.)
            for pending in batch:
                if pending.key is not None:
                    self._in_flight.discard(pending.key)
        for pending, result in zip(batch, results, strict=True):
            if pending.future.done():
                continue  # its caller went away
            if isinstance(result, Exception):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)
        if self._on_batch is not None:
            self._on_batch(len(batch), time.perf_counter() - started)

    # -- one transaction ------------------------------------------------------

    async def _save(self, batch: Sequence[Pending]) -> list[Result]:
        async with self._saving:
            for attempt in (1, 2):
                conn = await self._conn.get()
                committing = _Committing()
                try:
                    async with asyncio.timeout(self.deadline):
                        return await self._transaction(conn, batch, committing)
                except BaseException as e:
                    # Aggregates may hold events that were never committed.
                    self._cache.evict(p.command.user_id for p in batch)
                    if isinstance(e, TimeoutError):
                        # PostgreSQL stopped answering (a network path gone
                        # silent, a stalled server): drop the connection.
                        await self._conn.drop()
                        raise DatabaseUnavailable(
                            f"the database did not answer within {self.deadline:.0f} s"
                        ) from e
                    translated = unavailable(e)
                    if translated is None:
                        raise
                    if isinstance(e, psycopg.errors.LockNotAvailable):
                        raise translated from e
                    await self._conn.drop()
                    # A connection that died before COMMIT was sent (PostgreSQL
                    # restarted, say) wrote nothing: try once more on a new one.
                    # After COMMIT was sent the outcome is unknown; the caller is
                    # told so, and can retry with its idempotency key.
                    if attempt == 2 or committing.sent:
                        raise translated from e
                    log.info("retrying a batch on a new connection: %s", e)
            raise AssertionError("unreachable")

    async def _transaction(
        self,
        conn: psycopg.AsyncConnection[Any],
        batch: Sequence[Pending],
        committing: _Committing,
    ) -> list[Result]:
        keys = [p.key for p in batch if p.key is not None]

        # Begin, take the lock and queue the projector's wake-up in one round
        # trip; then read under the lock, decide, insert, commit. (Not in
        # pipeline mode: psycopg's async pipeline can stall sending a large
        # batch, psycopg/psycopg#685.)
        try:
            begun = await conn.execute(self._begin)
            now = self.clock()
            found = await self._found_at_lock(begun)
            # A Stripe delivery's user may be known only now (see recorded.received).
            received = await recorded.received(conn, batch)
            user_ids = sorted({p.command.user_id for p in batch} - {NO_USER})
            users: dict[str, User | None] = {uid: self._cache.get(uid) for uid in user_ids}
            cold = [uid for uid, user in users.items() if user is None]
            stored = await loading.stored_outcomes(conn, keys)
            unreadable = await loading.bring_up_to_date(conn, self.ledger, users, cold)
            before = {uid: u.version if u is not None else 0 for uid, u in users.items()}
            holds = await recorded.recorded_holds(conn, batch, users)

            decisions = Decisions(batch, users, unreadable, stored, now, holds, received)

            positions: list[int] = []
            columns = self._columns(decisions)
            if decisions.new_events:
                cursor = await conn.execute(events_table.INSERT, columns)
                positions = [int(row[0]) for row in await cursor.fetchall()]
            results = decisions.accept(positions, self.present)
            written = Written(
                decisions.new_events,
                positions,
                before,
                users,
                decisions.records,
                decided=[(p.command, r) for p, r in zip(batch, results, strict=True)],
                topics=columns[2],
                states=columns[3],
            )
            with_commit = []
            for part in self.alongside:
                statement = await part.write(conn, written, found.get(id(part), ()))
                if statement is not None:
                    with_commit.append(statement)
            committing.sent = True
            await conn.execute("; ".join([*with_commit, "COMMIT"]))
        except BaseException:
            if not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    await conn.execute("ROLLBACK")
            raise

        for user in users.values():
            if user is not None:
                self._cache.put(user)
        return results

    async def _found_at_lock(self, begun: psycopg.AsyncCursor[Any]) -> dict[int, list[Any]]:
        """The rows of each part's `at_lock` query, from the begin's results
        (BEGIN, the lock, NOTIFY, then those queries, in order)."""
        results: list[list[Any]] = []
        while begun.nextset():
            if begun.description is not None:
                results.append(await begun.fetchall())
        parts = [part for part in self.alongside if part.at_lock is not None]
        return {id(part): rows for part, rows in zip(parts, results, strict=True)}

    def _columns(self, decisions: Decisions) -> tuple[list[str], list[int], list[str], list[bytes]]:
        stored = [self.ledger.mapper.to_stored_event(new.event) for new in decisions.new_events]
        return (
            [str(s.originator_id) for s in stored],
            [s.originator_version for s in stored],
            [s.topic for s in stored],
            [s.state for s in stored],
        )
