"""The eventsourcing Application that stores users' events: its aggregates,
mapper, recorder and lock, and the decoding of a stored event.

The ledger writes and reads the library's events table with statements of its
own (ledger.events_table, ledger.writer); the library supplies the table, its
lock, the mapper and the upcasting of old event shapes.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson
from eventsourcing.application import Application
from eventsourcing.persistence import InfrastructureFactory, StoredEvent, Transcoder
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore, PostgresFactory
from eventsourcing.utils import Environment, get_topic
from psycopg.rows import dict_row

from ledger import chain, events_table, holds_table, idempotency, snapshots, stripe_table
from ledger.db import POOL_RECONNECT_TIMEOUT, Database, Table
from ledger.domain import UserEvent, UserState
from ledger.errors import HistoryUnreadable

#: The fields of events that are times, kept as RFC 3339 text.
TIME_FIELDS = ("timestamp", "expires_at", "expired_at", "anchor", "period_start", "period_end")


class JsonTranscoder(Transcoder):
    """Events as plain JSON, readable with `convert_from(state, 'UTF8')::jsonb`.

    An event's only non-JSON values are its times (TIME_FIELDS), kept as RFC
    3339 text."""

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def decode(self, data: bytes) -> Any:
        state = orjson.loads(data)
        for name in TIME_FIELDS:
            value = state.get(name)
            if isinstance(value, str):
                state[name] = datetime.fromisoformat(value)
        return state


class Ledger(Application[str]):
    """Users' streams in the library's PostgreSQL events table."""

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
    def open(cls, database: Database, *, pool_size: int = 1, max_overflow: int = 1) -> Ledger:
        """The application on `database`. Its own pool serves the library's
        few statements here (DDL, and old-shape inserts of `ledger generate`):
        by default one connection, opened when first used."""
        return cls(env=database.library_env(pool_size=pool_size, max_overflow=max_overflow))

    @property
    def postgres(self) -> PostgresApplicationRecorder:
        return cast(PostgresApplicationRecorder, self.recorder)

    @property
    def datastore(self) -> PostgresDatastore:
        return self.postgres.datastore

    def tables(self) -> list[Table]:
        """Every table of the write side, in the order they are created."""
        events = Table(events_table.TABLE, lambda _: self.postgres.create_table())
        return [
            events,
            idempotency.DEFINITION,
            snapshots.DEFINITION,
            holds_table.DEFINITION,
            *stripe_table.DEFINITIONS,
            chain.DEFINITION,
        ]

    @property
    def lock_statements(self) -> list[str]:
        """The library's statements that take the events table's write lock."""
        return [events_table.render(s) for s in self.postgres.lock_table_statements]

    def decode(self, stored: StoredEvent) -> UserEvent:
        """The event of a stored record, upcast from an older shape if need be.
        One this release cannot read (a type or shape from a newer release,
        during a rolling deploy, say) raises HistoryUnreadable."""
        try:
            event = cast(UserEvent, self.mapper.to_domain_event(stored))
            missing = _fields(type(event)).difference(event.__dict__)
            if missing:
                raise ValueError(f"it has no {', '.join(sorted(missing))}")
        except Exception as e:
            raise HistoryUnreadable.of(
                str(stored.originator_id), stored.originator_version, stored.topic, e
            ) from e
        return event

    def decode_row(
        self, user_id: str, version: int, topic: str, state: bytes | memoryview
    ) -> UserEvent:
        """`decode`, of the columns of a row of the events table."""
        data = state if isinstance(state, bytes) else bytes(state)
        return self.decode(StoredEvent(user_id, version, topic, data))


@functools.cache
def _fields(event_class: type[UserEvent]) -> frozenset[str]:
    """The fields an event of `event_class` has (its annotations, less the
    class-level ones): a stored event without them is of a shape this release
    does not know."""
    names = {name for k in event_class.__mro__ for name in inspect.get_annotations(k)}
    return frozenset(name for name in names if not hasattr(event_class, name))


def evolve(event: UserEvent, state: UserState | None) -> UserState:
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

    event: UserEvent
    position: int
