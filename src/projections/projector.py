"""The projector: keeps the users table up to date, each event applied exactly once.

Exactly once, because each batch is one transaction that reads the tracking
position FOR UPDATE, applies the events after it, writes the rows and moves the
position (the library's `_insert_tracking`), then commits: a crash anywhere
leaves either all of it or none of it.

One projector per database is active (projections.follower): others stand by
and take over within a second of its connection closing.

No event is skipped: the library inserts events under an EXCLUSIVE table lock,
so positions become visible in order, and "events after my position" never
passes over one that commits later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from ledger import events_table
from ledger.application import Ledger, Recorded
from ledger.db import Database
from ledger.domain import UserState, event_type
from projections import status as st
from projections import users_table
from projections.follower import Follower
from projections.history import replay_user
from projections.users import UsersProjection
from projections.users_table import Table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """An event the projection cannot apply, and why."""

    position: int
    user_id: str
    version: int
    event_type: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "user_id": self.user_id,
            "version": self.version,
            "event_type": self.event_type,
            "message": self.message,
        }


def decode_rows(
    ledger: Ledger, rows: Sequence[tuple[Any, ...]]
) -> tuple[list[Recorded], Failure | None]:
    """Events from (position, user, version, topic, state) rows, up to the first
    that cannot be decoded."""
    recorded: list[Recorded] = []
    for position, user_id, version, topic, state in rows:
        try:
            event = ledger.decode_row(user_id, version, topic, state)
        except Exception as e:
            return recorded, Failure(position, user_id, version, topic, f"cannot decode: {e}")
        recorded.append(Recorded(event, position))
    return recorded, None


def apply_events(
    conn: psycopg.Connection[Any], ledger: Ledger, table: Table, recorded: Sequence[Recorded]
) -> tuple[int | None, Failure | None]:
    """Fold `recorded` onto the table's rows and write the changed rows, in the
    caller's transaction. Stops before the first event that cannot be applied.
    Returns the position of the last event applied and the failure, if any.
    A row that keeps no state (a live table of the release before, during the
    rebuild that replaces it) is replayed from the history at its position."""

    def replay(user_id: str, position: int) -> tuple[UserState, int] | None:
        return replay_user(ledger, conn, user_id, position)

    states = table.read(conn, list({r.event.originator_id for r in recorded}), replay)
    changed: set[str] = set()
    grants: dict[tuple[str, str], tuple[Any, ...]] = {}
    last: int | None = None
    failure: Failure | None = None
    for r in recorded:
        user_id = r.event.originator_id
        before = states.get(user_id)
        try:
            after = r.event.evolve(before[0] if before else None)
        except Exception as e:
            failure = Failure(
                r.position,
                user_id,
                r.event.originator_version,
                event_type(r.event),
                str(e),
            )
            break
        states[user_id] = (after, r.position)
        changed.add(user_id)
        if table.grants is not None:
            for grant_id in r.event.touched_grants(after):
                grant = after.grant(grant_id)
                if grant is not None:
                    grants[user_id, grant_id] = table.grant_row(user_id, grant, r.position)
        last = r.position
    table.upsert(conn, [table.row(*states[user_id]) for user_id in changed])
    table.upsert_grants(conn, list(grants.values()))
    return last, failure


class Projector(Follower):
    """Tails the event log into the users table, in batches, while it leads."""

    def __init__(
        self,
        database: Database,
        ledger: Ledger,
        projection: UsersProjection | None = None,
        *,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        start_rebuild: Callable[[], None] | None = None,
    ) -> None:
        self.projection = projection or UsersProjection()
        super().__init__(
            database,
            name="projector",
            lock_key=st.leader_lock(self.projection.name),
            channels=(events_table.CHANNEL, st.CONTROL_CHANNEL),
            poll_interval=poll_interval,
        )
        self.ledger = ledger
        self.batch_size = batch_size
        self._start_rebuild = start_rebuild
        self._tracking = st.tracking_recorder(ledger.datastore)
        self._table: Table | None = None
        self._table_version: str | None = None
        self._narrow = False
        self.failed = False

    # -- leading --------------------------------------------------------------

    def on_lead(self, conn: psycopg.Connection[Any]) -> bool:
        name = self.projection.name
        status = st.read_status(conn, name)
        if status is not None and self._newer(status.version):
            self._warn_newer(status.version)
            return False
        with conn.transaction():
            if status is not None and status.error is not None:
                # A new leader is the operator's retry: try the failed event again.
                st.write_status(conn, name, error=None)
            if status is not None and status.version != self.projection.version:
                log.warning(
                    "users table is version %s, this projector is %s: rebuilding",
                    status.version,
                    self.projection.version,
                )
                st.request_rebuild(conn, name, unless_requested=True)
        self.failed = False
        return True

    def on_lost(self) -> None:
        self._table = None

    def work(self, conn: psycopg.Connection[Any]) -> bool:
        status = st.read_status(conn, self.projection.name)
        if status is not None and self._newer(status.version):
            self._warn_newer(status.version)
            self.step_down(conn)
            return False
        if status is not None and status.rebuild_requested and self._start_rebuild:
            self._start_rebuild()
        if self.failed:
            self.failed = status is not None and status.error is not None
            if self.failed:
                return False
        try:
            applied = self._apply_batch(conn, 1 if self._narrow else self.batch_size)
            self._narrow = False
        except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as e:
            # The database refused a row. Retry one event at a time, to
            # commit everything before the culprit and name it.
            if self._narrow:
                self._fail(conn, self._culprit(conn, str(e)))
            self._narrow = True
            return True
        return applied >= self.batch_size

    def _newer(self, version: str) -> bool:
        """Whether the live table was built by a later release's projection.
        (During a rolling deploy, an old projector must not take it back.)"""
        code, _, _ = version.partition(".")
        return code.isdigit() and int(code) > self.projection.code_version

    def _warn_newer(self, version: str) -> None:
        log.warning(
            "the %r table is version %s, newer than this projector's %s: standing by",
            self.projection.name,
            version,
            self.projection.version,
        )

    # -- one batch ------------------------------------------------------------

    def _live_table(self, conn: psycopg.Connection[Any], version: str) -> Table:
        if self._table is None or self._table_version != version:
            self._table = users_table.describe(conn, users_table.LIVE_SCHEMA, self.projection)
            self._table_version = version
        return self._table

    def _apply_batch(self, conn: psycopg.Connection[Any], limit: int) -> int:
        name = self.projection.name
        with conn.transaction():
            # Waits while a rebuild swaps a new table in.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (st.table_lock(name),))
            status = st.read_status(conn, name)
            table = self._live_table(conn, status.version if status else "")
            position = st.read_position(conn, name, lock=True)
            rows = conn.execute(events_table.AFTER, (position, limit)).fetchall()
            if not rows:
                return 0
            recorded, failure = decode_rows(self.ledger, rows)
            last, apply_failure = apply_events(conn, self.ledger, table, recorded)
            failure = apply_failure or failure
            if last is not None:
                st.record_position(self._tracking, conn, name, last)
                conn.execute("SELECT pg_notify(%s, %s)", (st.POSITION_CHANNEL, str(last)))
        if failure is not None:
            self._fail(conn, failure)
        return len(rows) if failure is None else 0

    def _culprit(self, conn: psycopg.Connection[Any], message: str) -> Failure:
        position = st.read_position(conn, self.projection.name, lock=False)
        rows = conn.execute(events_table.AFTER, (position, 1)).fetchall()
        if not rows:
            return Failure(position, "", 0, "", message)
        recorded, failure = decode_rows(self.ledger, rows)
        if failure is not None:
            return failure
        event = recorded[0].event
        return Failure(
            recorded[0].position,
            event.originator_id,
            event.originator_version,
            event_type(event),
            message,
        )

    def _fail(self, conn: psycopg.Connection[Any], failure: Failure) -> None:
        log.error(
            "projection %r cannot apply the event at position %d: %s",
            self.projection.name,
            failure.position,
            failure.message,
        )
        with conn.transaction():
            st.write_status(conn, self.projection.name, error=failure.as_dict())
        self.failed = True
