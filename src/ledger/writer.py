"""Group commit: concurrent commands are decided and saved in one transaction.

Every insert into the events table takes the library's EXCLUSIVE table lock, so
that positions are committed in order and no reader passes over a gap. That lock
serializes writers; paying it (and the WAL flush) once per batch rather than once
per command is what lets the ledger scale.

A batch runs like this, in one transaction:

1. take the table lock (the library's `_lock_table`);
2. read stored outcomes of the batch's idempotency keys;
3. bring the batch's users up to date: from an in-process cache, plus any events
   other processes appended since (read under the lock, so nothing can slip in);
4. decide each command in arrival order against the state left by the ones
   before it; a refused command refuses only itself;
5. insert all new events with the library's insert statement, and the outcomes
   of the batch's idempotency keys;
6. commit. Only then is any caller answered.

Because decisions are made under the lock, two processes can never both spend
the last credit: the second sees the first's event when it reads in step 3.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, cast

import psycopg
from eventsourcing.persistence import StoredEvent
from psycopg.rows import DictRow

from ledger import idempotency
from ledger.application import EVENTS_TABLE, Ledger, translate_errors
from ledger.commands import Command
from ledger.domain import Cause, User, UserState
from ledger.errors import (
    DOMAIN_REFUSALS,
    REFUSALS_BY_CODE,
    DatabaseUnavailable,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    LedgerError,
)
from ledger.idempotency import IdempotencyKey
from ledger.views import event_view, user_view

log = logging.getLogger(__name__)

_LOAD_NEWER_EVENTS = f"""
SELECT e.originator_id, e.originator_version, e.topic, e.state
FROM unnest(%s::text[], %s::bigint[]) AS known(id, version)
JOIN {EVENTS_TABLE} AS e ON e.originator_id = known.id AND e.originator_version > known.version
ORDER BY e.originator_id, e.originator_version
"""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A command's event, and its user's state right after it."""

    event: dict[str, Any]
    user: dict[str, Any]
    replayed: bool = False  # the stored outcome of an earlier request with the same key

    def as_outcome(self) -> dict[str, Any]:
        return {"accepted": {"event": self.event, "user": self.user}}


Result = Accepted | LedgerError


@dataclass(slots=True)
class _Pending:
    command: Command
    cause: Cause
    key: IdempotencyKey | None
    future: Future[Accepted] = field(default_factory=Future)


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


_STOP = object()


class CommandWriter:
    """Takes commands from any thread, commits them in batches on its own thread."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        max_batch: int = 500,
        window: float = 0.0005,
        cache_size: int = 50_000,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.max_batch = max_batch
        self.window = window
        self._cache = _UserCache(cache_size)
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._in_flight: set[IdempotencyKey] = set()
        self._in_flight_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse new commands, finish the queued ones, stop."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    # -- submitting ---------------------------------------------------------

    def submit(
        self, command: Command, cause: Cause, key: IdempotencyKey | None = None
    ) -> Future[Accepted]:
        pending = _Pending(command, cause, key)
        if self._closed:
            pending.future.set_exception(DatabaseUnavailable("the ledger is shutting down"))
            return pending.future
        if key is not None:
            with self._in_flight_lock:
                if key in self._in_flight:
                    pending.future.set_exception(
                        IdempotencyKeyInUse(
                            "a request with this Idempotency-Key is still being processed"
                        )
                    )
                    return pending.future
                self._in_flight.add(key)
            pending.future.add_done_callback(lambda _: self._release(key))
        self._queue.put(pending)
        return pending.future

    def execute(
        self, command: Command, cause: Cause, key: IdempotencyKey | None = None
    ) -> Accepted:
        return self.submit(command, cause, key).result()

    def execute_together(self, commands: Sequence[tuple[Command, Cause]]) -> list[Result]:
        """Decide and commit all `commands` in one transaction on the calling
        thread: all of their events are recorded, or none. For a writer whose
        thread is not started (an import, a script)."""
        if self._thread is not None:
            raise RuntimeError("execute_together() needs a writer that is not started")
        batch = [_Pending(command, cause, None) for command, cause in commands]
        return self._save(batch)

    def _release(self, key: IdempotencyKey) -> None:
        with self._in_flight_lock:
            self._in_flight.discard(key)

    # -- the writer thread --------------------------------------------------

    def _run(self) -> None:
        previous_size = 0
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, _Pending)
            batch = [item]
            stop = self._gather(batch, linger=previous_size > 1)
            previous_size = len(batch)
            self._commit(batch)
            if stop:
                return

    def _gather(self, batch: list[_Pending], *, linger: bool) -> bool:
        """Add whatever else is queued; under load, wait up to `window` for more.
        Returns True if a stop was requested."""
        deadline = time.monotonic() + (self.window if linger else 0.0)
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                return False
            if item is _STOP:
                return True
            assert isinstance(item, _Pending)
            batch.append(item)
        return False

    def _commit(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            results = self._save(batch)
        except Exception as e:
            if not isinstance(e, LedgerError):
                log.exception("a batch of %d commands failed", len(batch))
            for pending in batch:
                pending.future.set_exception(e)
            return
        for pending, result in zip(batch, results, strict=True):
            if isinstance(result, LedgerError):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)
        if self._on_batch is not None:
            self._on_batch(len(batch), time.perf_counter() - started)

    # -- one transaction ------------------------------------------------------

    def _save(self, batch: Sequence[_Pending]) -> list[Result]:
        user_ids = {pending.command.user_id for pending in batch}
        try:
            with translate_errors(), self.ledger.datastore.transaction(commit=True) as curs:
                results = self._decide_and_insert(curs, batch)
        except BaseException:
            # Aggregates may hold events that were never committed.
            self._cache.evict(user_ids)
            raise
        return results

    def _decide_and_insert(
        self, curs: psycopg.Cursor[DictRow], batch: Sequence[_Pending]
    ) -> list[Result]:
        recorder = self.ledger.postgres
        recorder._lock_table(curs)  # noqa: SLF001  (the library's lock, taken first)
        stored = idempotency.lookup(curs, (p.key for p in batch if p.key is not None))
        users = self._load(curs, {p.command.user_id for p in batch})

        results: list[Result | None] = [None] * len(batch)
        new_events: list[tuple[int, User.Event, UserState]] = []
        records: list[tuple[IdempotencyKey, str, dict[str, Any]]] = []
        for index, pending in enumerate(batch):
            command, key = pending.command, pending.key
            fingerprint = command.fingerprint() if key is not None else ""
            if key is not None and key in stored:
                results[index] = _replay(stored[key], fingerprint)
                continue
            try:
                user = command.decide(users.get(command.user_id), pending.cause)
            except LedgerError as refusal:
                results[index] = refusal
                if key is not None and isinstance(refusal, DOMAIN_REFUSALS):
                    outcome = {"refused": {"code": refusal.code, "detail": refusal.detail}}
                    records.append((key, fingerprint, outcome))
                continue
            users[command.user_id] = user
            (event,) = cast(list[User.Event], user.collect_events())
            new_events.append((index, event, user.state))

        if new_events:
            mapper = self.ledger.mapper
            stored_events: list[StoredEvent] = [
                mapper.to_stored_event(event) for _, event, _ in new_events
            ]
            recorder._insert_stored_events(curs, stored_events)  # noqa: SLF001
            new_positions = [int(row["notification_id"]) for row in curs.fetchall()]
            for (index, event, state), position in zip(new_events, new_positions, strict=True):
                accepted = Accepted(event_view(event, position), user_view(state, position))
                results[index] = accepted
                key = batch[index].key
                if key is not None:
                    records.append((key, batch[index].command.fingerprint(), accepted.as_outcome()))
        idempotency.store(curs, records)

        for changed in users.values():
            if changed is not None:
                self._cache.put(changed)
        return [r for r in results if r is not None]

    def _load(self, curs: psycopg.Cursor[DictRow], user_ids: set[str]) -> dict[str, User | None]:
        """The batch's users as of now: cached, then brought up to date."""
        ids = sorted(user_ids)
        users: dict[str, User | None] = {uid: self._cache.get(uid) for uid in ids}
        versions = [u.version if u is not None else 0 for u in users.values()]
        curs.execute(_LOAD_NEWER_EVENTS, (ids, versions), prepare=True)
        for row in curs.fetchall():
            event = self.ledger.decode(
                StoredEvent(
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
            )
            users[event.originator_id] = event.mutate(users[event.originator_id])
        return users


def _replay(stored: idempotency.StoredOutcome, fingerprint: str) -> Result:
    if stored.fingerprint != fingerprint:
        return IdempotencyKeyReused("this Idempotency-Key was first used with a different request")
    outcome = stored.outcome
    if "accepted" in outcome:
        return Accepted(outcome["accepted"]["event"], outcome["accepted"]["user"], replayed=True)
    refused = outcome["refused"]
    return REFUSALS_BY_CODE[refused["code"]](refused["detail"])
