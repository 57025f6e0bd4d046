"""The eventsourcing Application that stores users' events, and reads of its log."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson
import psycopg
from eventsourcing.application import Application
from eventsourcing.persistence import (
    InterfaceError,
    Notification,
    OperationalError,
    StoredEvent,
    Transcoder,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.rows import DictRow

from ledger import idempotency
from ledger.db import Database
from ledger.domain import User
from ledger.errors import DatabaseUnavailable

EVENTS_TABLE = "ledger_events"


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
    """Users' streams in PostgreSQL, written and read through the library."""

    name = "Ledger"  # the events table is "ledger_events"

    def construct_transcoder(self) -> Transcoder:
        return JsonTranscoder()

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
        """The events table (the library's DDL) and the idempotency keys."""
        with translate_errors():
            self.postgres.create_table()
            with self.datastore.transaction(commit=True) as curs:
                curs.execute(idempotency.CREATE_TABLE)

    def decode(self, stored: StoredEvent) -> User.Event:
        return cast(User.Event, self.mapper.to_domain_event(stored))

    # -- reads of the log ---------------------------------------------------

    def user_events(
        self, user_id: str, *, after_version: int = 0, limit: int | None = None
    ) -> list[Recorded]:
        """A user's events, oldest first, each with its global position."""
        query = (
            "SELECT originator_id, originator_version, topic, state, notification_id "
            f"FROM {EVENTS_TABLE} WHERE originator_id = %s AND originator_version > %s "
            "ORDER BY originator_version"
        )
        params: list[object] = [user_id, after_version]
        if limit is not None:
            query += " LIMIT %s"
            params.append(limit)
        with reading(self) as curs:
            curs.execute(query, params, prepare=True)
            return [self._recorded(row) for row in curs.fetchall()]

    def events_after(self, position: int, limit: int) -> list[Recorded]:
        """Every user's events after a global position, in global order."""
        with translate_errors():
            notifications = self.postgres.select_notifications(
                start=position, limit=limit, inclusive_of_start=False
            )
        return [self._from_notification(n) for n in notifications]

    def head(self) -> int:
        """The position of the newest event, 0 if there is none."""
        with reading(self) as curs:
            curs.execute(f"SELECT COALESCE(MAX(notification_id), 0) AS head FROM {EVENTS_TABLE}")
            row = curs.fetchone()
            return int(row["head"]) if row else 0

    def _recorded(self, row: DictRow) -> Recorded:
        stored = StoredEvent(
            originator_id=row["originator_id"],
            originator_version=row["originator_version"],
            topic=row["topic"],
            state=bytes(row["state"]),
        )
        return Recorded(self.decode(stored), int(row["notification_id"]))

    def _from_notification(self, notification: Notification) -> Recorded:
        return Recorded(self.decode(notification), notification.id)


@dataclass(frozen=True, slots=True)
class Recorded:
    """An event as the log holds it: the event and its global position."""

    event: User.Event
    position: int


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn "the database cannot be reached" into the ledger's own error."""
    try:
        yield
    except (
        OperationalError,
        InterfaceError,
        psycopg.OperationalError,
        psycopg.InterfaceError,
    ) as e:
        raise DatabaseUnavailable(f"the database cannot be reached: {e}") from e


@contextlib.contextmanager
def reading(ledger: Ledger) -> Iterator[psycopg.Cursor[DictRow]]:
    with translate_errors(), ledger.datastore.get_connection() as conn, conn.cursor() as curs:
        yield curs
