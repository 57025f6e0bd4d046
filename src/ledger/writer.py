"""Group commit: concurrent commands are decided and saved in one transaction.

Every insert into the events table takes the library's EXCLUSIVE table lock, so
that positions are committed in order and no reader passes over a gap. That lock
serializes writers; paying it (and the WAL flush) once per batch rather than once
per command is what lets the ledger scale.

A batch runs like this, in one transaction:

1. take the table lock (the library's own lock statements, and its NOTIFY);
2. read stored outcomes of the batch's idempotency keys;
3. bring the batch's users up to date: from an in-process cache (or the latest
   snapshot), plus any events other processes appended since (read under the
   lock, so nothing can slip in);
4. decide each command in arrival order against the state left by the ones
   before it; a refused command refuses only itself;
5. insert all new events into the library's events table, encoded by its mapper
   (the same insert as the library's, with one array per column: see
   _INSERT_EVENTS), the outcomes of the batch's idempotency keys, and the
   snapshots that are due;
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
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import psycopg
from eventsourcing.persistence import StoredEvent
from psycopg import sql

from ledger import idempotency, snapshots
from ledger.application import BUSY, EVENTS_TABLE, Ledger
from ledger.commands import Command
from ledger.db import IDLE_IN_TRANSACTION_TIMEOUT, LOCK_TIMEOUT, Database
from ledger.domain import Cause, User, UserState
from ledger.errors import (
    DOMAIN_REFUSALS,
    REFUSALS_BY_CODE,
    DatabaseUnavailable,
    HistoryUnreadable,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    LedgerError,
)
from ledger.idempotency import IdempotencyKey
from ledger.views import event_view, user_view

log = logging.getLogger(__name__)

# LATERAL makes PostgreSQL look each user up in the primary key; a plain join
# lets a generic (prepared) plan scan the whole table instead.
_LOAD_NEWER_EVENTS = f"""
SELECT e.originator_id, e.originator_version, e.topic, e.state
FROM unnest(%b::text[], %b::bigint[]) AS known(id, version)
CROSS JOIN LATERAL (
    SELECT originator_id, originator_version, topic, state FROM {EVENTS_TABLE}
    WHERE originator_id = known.id AND originator_version > known.version
    ORDER BY originator_version
) AS e
"""

# The library's insert statement passes events as an array of its composite type,
# which psycopg can only send as escaped text: a third of a batch's time. This is
# the same insert, into the same columns, with one array per column instead.
_INSERT_EVENTS = (
    f"INSERT INTO {EVENTS_TABLE} (originator_id, originator_version, topic, state) "
    "SELECT * FROM unnest(%b::text[], %b::bigint[], %b::text[], %b::bytea[]) "
    "RETURNING notification_id"
)

#: Seconds a batch may take, its wait for the lock included. (When it runs out,
#: psycopg tries to cancel the query on the server, for up to 10 s more.)
BATCH_DEADLINE = LOCK_TIMEOUT + 3.0

#: After failing to connect, answer "unavailable" at once for this long.
RECONNECT_BACKOFF = 0.5


@dataclass(frozen=True, slots=True)
class Accepted:
    """A command's event, and its user's state right after it."""

    event: dict[str, Any]
    user: dict[str, Any]
    replayed: bool = False  # the stored outcome of an earlier request with the same key

    def as_outcome(self) -> dict[str, Any]:
        return {"accepted": {"event": self.event, "user": self.user}}


#: A command's outcome: its event, or why not (a LedgerError, or an unexpected
#: error, which only that command's caller hears of).
Result = Accepted | Exception


@dataclass(slots=True)
class _Pending:
    command: Command
    cause: Cause
    key: IdempotencyKey | None
    future: asyncio.Future[Accepted] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    #: How a reused key is recognised; worked out here, before the table lock.
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        self.fingerprint = self.command.fingerprint() if self.key is not None else ""


class _UserCache:
    """Recently used users, least recently used evicted first. Only a shortcut:
    every batch reads what other processes appended since."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._users: OrderedDict[str, User] = OrderedDict()

    def get(self, user_id: str) -> User | None:
        user = self._users.get(user_id)
        if user is not None:
            self._users.move_to_end(user_id)
        return user

    def put(self, user: User) -> None:
        self._users[user.id] = user
        self._users.move_to_end(user.id)
        while len(self._users) > self._size:
            self._users.popitem(last=False)

    def evict(self, user_ids: Iterable[str]) -> None:
        for user_id in user_ids:
            self._users.pop(user_id, None)


class _Decisions:
    """One batch's decisions, made in arrival order against the loaded users.
    Whatever goes wrong with one command (a refusal, a user whose history this
    release cannot read, a bug) is that command's result alone."""

    def __init__(
        self,
        batch: Sequence[_Pending],
        users: dict[str, User | None],
        unreadable: dict[str, HistoryUnreadable],
        stored: dict[IdempotencyKey, idempotency.StoredOutcome],
    ) -> None:
        self.batch = batch
        self.users = users
        self.unreadable = unreadable
        self.results: list[Result | None] = [None] * len(batch)
        self.new_events: list[tuple[int, User.Event, UserState]] = []
        self.records: list[tuple[IdempotencyKey, str, dict[str, Any]]] = []
        for index, pending in enumerate(batch):
            self._decide(index, pending, stored)

    def _decide(
        self,
        index: int,
        pending: _Pending,
        stored: dict[IdempotencyKey, idempotency.StoredOutcome],
    ) -> None:
        command, key, fingerprint = pending.command, pending.key, pending.fingerprint
        # (A batch never holds a key twice: see CommandWriter.submit.)
        if key is not None and key in stored:
            self.results[index] = _replay(stored[key], fingerprint)
            return
        if command.user_id in self.unreadable:
            self.results[index] = HistoryUnreadable(self.unreadable[command.user_id].detail)
            return
        try:
            user = command.decide(self.users.get(command.user_id), pending.cause)
        except LedgerError as refusal:
            self.results[index] = refusal
            if key is not None and isinstance(refusal, DOMAIN_REFUSALS):
                outcome = {"refused": {"code": refusal.code, "detail": refusal.detail}}
                self.records.append((key, fingerprint, outcome))
            return
        except Exception as error:
            log.exception("deciding %r failed", command)
            self.results[index] = error
            return
        self.users[command.user_id] = user
        (event,) = cast(list[User.Event], user.collect_events())
        self.new_events.append((index, event, user.state))

    def accept(self, positions: Sequence[int]) -> list[Result]:
        """Complete the results with the positions the new events were given."""
        for (index, event, state), position in zip(self.new_events, positions, strict=True):
            accepted = Accepted(event_view(event, position), user_view(state, position))
            self.results[index] = accepted
            pending = self.batch[index]
            if pending.key is not None:
                self.records.append((pending.key, pending.fingerprint, accepted.as_outcome()))
        return [r for r in self.results if r is not None]


@dataclass(slots=True)
class _Committing:
    sent: bool = False


class CommandWriter:
    """Takes commands on the event loop and commits them in batches."""

    def __init__(
        self,
        ledger: Ledger,
        database: Database,
        *,
        max_batch: int = 500,
        window: float = 0.0005,
        cache_size: int = 50_000,
        on_batch: Callable[[int, float], None] | None = None,
        deadline: float | None = BATCH_DEADLINE,
    ) -> None:
        """`deadline`: seconds a batch may take before its callers are told the
        database is unavailable (it waits for the lock, then for PostgreSQL).
        None for a script's one large transaction (an import), which also
        lifts PostgreSQL's limit on its session idling inside a transaction."""
        self.ledger = ledger
        self.deadline = deadline
        self.database = database
        self.max_batch = max_batch
        self.window = window
        self._cache = _UserCache(cache_size)
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._in_flight: set[IdempotencyKey] = set()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        recorder = ledger.postgres
        # The library's lock and notify statements, rendered once, after a BEGIN.
        notify = sql.SQL("NOTIFY {}").format(sql.Identifier(recorder.channel_name))
        self._begin = "; ".join(
            [
                "BEGIN",
                *(_render(statement) for statement in recorder.lock_table_statements),
                notify.as_string(),
            ]
        )
        self._unavailable_until = 0.0
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
        await self._disconnect()

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
        pending = _Pending(command, cause, key)
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
        self._queue.put_nowait(pending)
        return pending.future

    async def execute_together(self, commands: Sequence[tuple[Command, Cause]]) -> list[Result]:
        """Decide and commit all `commands` in one transaction: all of their
        events are recorded, or none (an import, a script)."""
        batch = [_Pending(command, cause, None) for command, cause in commands]
        return await self._save(batch)

    # -- the batching loop ----------------------------------------------------

    async def _run(self) -> None:
        previous_size = 0
        while True:
            item = await self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = self._drain(batch)
            if not stop and previous_size > 1 and self.window > 0 and len(batch) < self.max_batch:
                # Busy: let a few more arrive, so the lock and flush serve more.
                await asyncio.sleep(self.window)
                stop = self._drain(batch)
            previous_size = len(batch)
            await self._commit(batch)
            if stop:
                return

    def _drain(self, batch: list[_Pending]) -> bool:
        """Add whatever is queued. Returns True if a stop was requested."""
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return False
            if item is None:
                return True
            batch.append(item)
        return False

    async def _commit(self, batch: list[_Pending]) -> None:
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

    async def _save(self, batch: Sequence[_Pending]) -> list[Result]:
        async with self._saving:
            for attempt in (1, 2):
                conn = await self._connection()
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
                        await self._disconnect()
                        raise DatabaseUnavailable(
                            f"the database did not answer within {self.deadline:.0f} s"
                        ) from e
                    if isinstance(e, psycopg.errors.LockNotAvailable):
                        raise DatabaseUnavailable(BUSY) from e
                    if not isinstance(e, psycopg.OperationalError | psycopg.InterfaceError):
                        raise
                    await self._disconnect()
                    # A connection that died before COMMIT was sent (PostgreSQL
                    # restarted, say) wrote nothing: try once more on a new one.
                    # After COMMIT was sent the outcome is unknown; the caller is
                    # told so, and can retry with its idempotency key.
                    if attempt == 2 or committing.sent:
                        raise DatabaseUnavailable(f"the database cannot be reached: {e}") from e
                    log.info("retrying a batch on a new connection: %s", e)
            raise AssertionError("unreachable")

    async def _transaction(
        self,
        conn: psycopg.AsyncConnection[Any],
        batch: Sequence[_Pending],
        committing: _Committing,
    ) -> list[Result]:
        keys = [p.key for p in batch if p.key is not None]
        user_ids = sorted({p.command.user_id for p in batch})
        users: dict[str, User | None] = {uid: self._cache.get(uid) for uid in user_ids}
        cold = [uid for uid, user in users.items() if user is None]

        # Begin, take the lock and queue the projector's wake-up in one round
        # trip; then read under the lock, decide, insert, commit. (Not in
        # pipeline mode: psycopg's async pipeline can stall sending a large
        # batch, psycopg/psycopg#685.)
        try:
            await conn.execute(self._begin)
            stored = {}
            if keys:
                cursor = await conn.execute(idempotency.LOOKUP, idempotency.lookup_params(keys))
                stored = idempotency.stored(await cursor.fetchall())
            if cold:
                # Users this process has not cached start from their latest
                # snapshot, not from their first event.
                cursor = await conn.execute(snapshots.LATEST, (cold,))
                for (data,) in await cursor.fetchall():
                    state = snapshots.decode(bytes(data))
                    if state is not None:
                        users[state.id] = User.from_state(state)
            versions = [u.version if u is not None else 0 for u in users.values()]
            cursor = await conn.execute(_LOAD_NEWER_EVENTS, (user_ids, versions))
            unreadable = self._fast_forward(users, await cursor.fetchall())
            before = {uid: u.version if u is not None else 0 for uid, u in users.items()}

            decisions = _Decisions(batch, users, unreadable, stored)

            positions: list[int] = []
            if decisions.new_events:
                cursor = await conn.execute(_INSERT_EVENTS, self._columns(decisions.new_events))
                positions = [int(row[0]) for row in await cursor.fetchall()]
            results = decisions.accept(positions)
            if decisions.records:
                await conn.execute(idempotency.STORE, idempotency.store_params(decisions.records))
            last_position = {
                event.originator_id: position
                for (_, event, _), position in zip(decisions.new_events, positions, strict=True)
            }
            due = [
                snapshots.Snapshot(user.state, last_position[uid])
                for uid, user in users.items()
                if user is not None and snapshots.crossed(before[uid], user.version)
            ]
            if due:
                await conn.execute(snapshots.STORE, snapshots.store_params(due))
            committing.sent = True
            await conn.execute("COMMIT")
        except BaseException:
            if not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    await conn.execute("ROLLBACK")
            raise

        for user in users.values():
            if user is not None:
                self._cache.put(user)
        return results

    def _fast_forward(
        self, users: dict[str, User | None], rows: list[tuple[Any, ...]]
    ) -> dict[str, HistoryUnreadable]:
        """Apply the events read under the lock. Returns the users whose history
        this release cannot read, and why; their commands are refused alone."""
        unreadable: dict[str, HistoryUnreadable] = {}
        for user_id, version, topic, state in rows:
            if user_id in unreadable:
                continue
            try:
                event = self.ledger.decode(StoredEvent(user_id, version, topic, bytes(state)))
                users[user_id] = cast(User | None, event.mutate(users[user_id]))
            except HistoryUnreadable as e:
                unreadable[user_id] = e
            except Exception as e:
                unreadable[user_id] = HistoryUnreadable.of(user_id, version, topic, e, applied=True)
            if user_id in unreadable:
                log.error("%s", unreadable[user_id].detail)
        for user_id in unreadable:
            users[user_id] = None  # never cached, never decided on
        return unreadable

    def _columns(
        self, new_events: list[tuple[int, User.Event, UserState]]
    ) -> tuple[list[str], list[int], list[str], list[bytes]]:
        stored = [self.ledger.mapper.to_stored_event(event) for _, event, _ in new_events]
        return (
            [str(s.originator_id) for s in stored],
            [s.originator_version for s in stored],
            [s.topic for s in stored],
            [s.state for s in stored],
        )

    # -- the connection ---------------------------------------------------------

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        if time.monotonic() < self._unavailable_until:
            raise DatabaseUnavailable("the database cannot be reached")
        try:
            settings = (
                [f"idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT}s"]
                if self.deadline is not None
                else []
            )
            conn = await psycopg.AsyncConnection.connect(
                self.database.conninfo(*settings), autocommit=True
            )
        except psycopg.Error as e:
            self._unavailable_until = time.monotonic() + RECONNECT_BACKOFF
            raise DatabaseUnavailable(f"the database cannot be reached: {e}") from e
        self._conn = conn
        return conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()


def _render(statement: object) -> str:
    if isinstance(statement, sql.Composable):
        return statement.as_string()
    if isinstance(statement, bytes):
        return statement.decode()
    return str(statement)


def _replay(stored: idempotency.StoredOutcome, fingerprint: str) -> Result:
    try:
        outcome = idempotency.first_outcome(stored, fingerprint)
    except IdempotencyKeyReused as e:
        return e
    if "accepted" in outcome:
        return Accepted(outcome["accepted"]["event"], outcome["accepted"]["user"], replayed=True)
    refused = outcome["refused"]
    return REFUSALS_BY_CODE[refused["code"]](refused["detail"], replayed=True)


def run_together(
    ledger: Ledger, database: Database, commands: Sequence[tuple[Command, Cause]]
) -> list[Result]:
    """For scripts: decide and commit `commands` in one transaction."""

    async def main() -> list[Result]:
        writer = CommandWriter(ledger, database, cache_size=len(commands) + 1, deadline=None)
        try:
            return await writer.execute_together(commands)
        finally:
            await writer.stop()

    return asyncio.run(main())
