"""The eventsourcing Application that stores users' events, and reads of its log."""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import orjson
import psycopg
from eventsourcing.application import Application
from eventsourcing.persistence import (
    InfrastructureFactory,
    InterfaceError,
    OperationalError,
    StoredEvent,
    Transcoder,
)
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
)
from eventsourcing.utils import Environment, get_topic
from psycopg.rows import DictRow, dict_row

from ledger import idempotency, snapshots
from ledger.db import POOL_RECONNECT_TIMEOUT, Database
from ledger.domain import User, UserState
from ledger.errors import DatabaseUnavailable, HistoryUnreadable

EVENTS_TABLE = "ledger_events"
#: Every user's events after a position, in the order they were committed.
EVENTS_AFTER = (
    "SELECT notification_id, originator_id, originator_version, topic, state "
    f"FROM {EVENTS_TABLE} WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
)

USER_EVENTS = (
    "SELECT originator_id, originator_version, topic, state, notification_id "
    f"FROM {EVENTS_TABLE} WHERE originator_id = %s AND originator_version > %s "
    "ORDER BY originator_version LIMIT %s"
)

#: LIMIT takes a bigint: no limit.
NO_LIMIT = 2**62


def sql_limit(count: int | None) -> int:
    """A row count as LIMIT can take it: none (None) or past a bigint is no limit.
    Every LIMIT the ledger computes (a page plus one, a version less another)
    goes through here, so that no arithmetic on a client's number leaves bigint."""
    return NO_LIMIT if count is None else max(0, min(count, NO_LIMIT))


HAS_EVENTS = f"SELECT 1 FROM {EVENTS_TABLE} WHERE originator_id = %s LIMIT 1"

#: Every table of the write side.
TABLES = (EVENTS_TABLE, idempotency.TABLE, snapshots.TABLE)


class JsonTranscoder(Transcoder):
    """Events as plain JSON, readable with `convert_from(state, 'UTF8')::jsonb`.

    An event's only non-JSON value is its `timestamp`, kept as RFC 3339 text."""

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def decode(self, data: bytes) -> Any:
        state = orjson.loads(data)
        timestamp = state.get("timestamp")
        if isinstance(timestamp, str):
            state["timestamp"] = datetime.fromisoformat(timestamp)
        return state


class Ledger(Application[str]):
    """Users' streams in the library's PostgreSQL events table: its aggregates,
    mapper, recorder and lock. (The writer inserts in batches of its own, under
    the library's lock; see ledger.writer.)"""

    name = "Ledger"  # the events table is "ledger_events"

    def construct_transcoder(self) -> Transcoder:
        return JsonTranscoder()

    def construct_factory(self, env: Environment) -> InfrastructureFactory[Any]:
        """The library's factory, its pool given the whole connection string
        (before the pool first connects, which the recorders do)."""
        factory = super().construct_factory(env)
        assert isinstance(factory, PostgresFactory)  # Ledger.open configures it so
        pool = factory.datastore.pool
        pool.conninfo = env["CONNINFO"]
        pool.kwargs = {"row_factory": dict_row}
        pool.reconnect_timeout = POOL_RECONNECT_TIMEOUT
        return factory

    @classmethod
    def open(cls, database: Database, *, pool_size: int = 2, max_overflow: int = 8) -> Ledger:
        return cls(env=database.library_env(pool_size=pool_size, max_overflow=max_overflow))

    @property
    def postgres(self) -> PostgresApplicationRecorder:
        return cast(PostgresApplicationRecorder, self.recorder)

    @property
    def datastore(self) -> PostgresDatastore:
        return self.postgres.datastore

    def create_tables(self) -> None:
        """The events table (the library's DDL), idempotency keys, snapshots."""
        with translate_errors():
            self.postgres.create_table()
            with self.datastore.transaction(commit=True) as curs:
                curs.execute(idempotency.CREATE_TABLE)
                curs.execute(snapshots.CREATE_TABLE)

    def decode(self, stored: StoredEvent) -> User.Event:
        """The event of a stored record, upcast from an older shape if need be.
        One this release cannot read (a type or shape from a newer release,
        during a rolling deploy, say) raises HistoryUnreadable."""
        try:
            event = cast(User.Event, self.mapper.to_domain_event(stored))
            missing = _fields(type(event)).difference(event.__dict__)
            if missing:
                raise ValueError(f"it has no {', '.join(sorted(missing))}")
        except Exception as e:
            raise HistoryUnreadable.of(
                str(stored.originator_id), stored.originator_version, stored.topic, e
            ) from e
        return event

    # -- reads of the log ---------------------------------------------------

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
        rows = self._fetch(
            USER_EVENTS, (user_id, after_version, sql_limit(None if limit is None else limit + 1))
        )
        events: list[Recorded] = []
        for row in rows:
            if len(events) == limit:
                return events, True
            if until is not None and recorded_after(bytes(row["state"]), until):
                break  # and so are the rest: times in a stream never go back
            events.append(self._recorded(row))
        return events, False

    def has_events(self, user_id: str) -> bool:
        """Whether the user has a stream at all (nothing is decoded)."""
        return bool(self._fetch(HAS_EVENTS, (user_id,)))

    def events_after(self, position: int, limit: int) -> tuple[list[Recorded], bool]:
        """Every user's events after a global position, in global order, at most
        `limit`, and whether more follow (the next is not decoded). (The
        library's select_notifications would retry for half a minute while the
        database is down; a caller should hear at once.)"""
        rows = self._fetch(EVENTS_AFTER, (position, sql_limit(limit + 1)))
        return [self._recorded(row) for row in rows[:limit]], len(rows) > limit

    def snapshot(
        self, user_id: str, *, version: int | None = None, at: datetime | None = None
    ) -> snapshots.Snapshot | None:
        """The latest snapshot of a user at or before a version and a time."""
        newest = datetime.max.replace(tzinfo=UTC)
        rows = self._fetch(
            snapshots.AT_MOST,
            (user_id, NO_LIMIT if version is None else version, at or newest),
        )
        state = snapshots.decode(bytes(rows[0]["state"])) if rows else None
        return snapshots.Snapshot(state, rows[0]["position"]) if state is not None else None

    def _fetch(self, query: str, params: Sequence[object]) -> list[DictRow]:
        """Rows of a read on a pooled connection. When PostgreSQL restarts, every
        pooled connection is dead: the first read to meet one has the pool drop
        them all, and tries once more on a new one."""
        for attempt in (1, 2):
            connected = False
            try:
                with self.datastore.get_connection() as conn, conn.cursor() as curs:
                    connected = True
                    curs.execute(query, params, prepare=True)
                    return curs.fetchall()
            except (OperationalError, InterfaceError) as e:
                if attempt == 2 or not connected:
                    raise DatabaseUnavailable(f"the database cannot be reached: {e}") from e
                self.datastore.pool.check()
        raise AssertionError("unreachable")

    def _recorded(self, row: DictRow) -> Recorded:
        stored = StoredEvent(
            originator_id=row["originator_id"],
            originator_version=row["originator_version"],
            topic=row["topic"],
            state=bytes(row["state"]),
        )
        return Recorded(self.decode(stored), int(row["notification_id"]))


_TIMESTAMP = re.compile(rb'"timestamp"\s*:\s*"([^"]+)"')


def recorded_after(state: bytes, moment: datetime) -> bool:
    """Whether the stored event `state` was recorded after `moment`, read from
    its stored JSON without decoding the event (which may be one this release
    cannot read). Quotes inside JSON strings are escaped, so only the event's
    own timestamp field matches."""
    match = _TIMESTAMP.search(state)
    if match is None:
        return False  # decoding it will say what is wrong
    try:
        return datetime.fromisoformat(match[1].decode()) > moment
    except ValueError:
        return False


@functools.cache
def _fields(event_class: type[User.Event]) -> frozenset[str]:
    """The fields an event of `event_class` has (its annotations, less the
    class-level ones): a stored event without them is of a shape this release
    does not know."""
    names = {name for k in event_class.__mro__ for name in inspect.get_annotations(k)}
    return frozenset(name for name in names if not hasattr(event_class, name))


def evolve(event: User.Event, state: UserState | None) -> UserState:
    """The fold's step, for reads of history: an event this release cannot
    apply (out of its bounds, say) is reported, naming it, as HistoryUnreadable."""
    try:
        return event.evolve(state)
    except Exception as e:
        topic = get_topic(type(event))
        raise HistoryUnreadable.of(
            event.originator_id, event.originator_version, topic, e, applied=True
        ) from e


@dataclass(frozen=True, slots=True)
class Recorded:
    """An event as the log holds it: the event and its global position."""

    event: User.Event
    position: int


#: Why a transaction gave up waiting for the events table (its lock_timeout).
BUSY = "the ledger is busy (another transaction holds the events table); retry"


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn "the database cannot be reached", or "is too busy to wait for",
    into the ledger's own error."""
    try:
        yield
    except psycopg.errors.LockNotAvailable as e:
        raise DatabaseUnavailable(BUSY) from e
    except (
        OperationalError,
        InterfaceError,
        psycopg.OperationalError,
        psycopg.InterfaceError,
    ) as e:
        raise DatabaseUnavailable(f"the database cannot be reached: {e}") from e
