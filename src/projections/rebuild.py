"""Rebuild the users table from history beside the live one, then swap it in.

1. copy: in one REPEATABLE READ snapshot, stream every event in (user, version)
   order, fold each user's events into one row, and COPY the rows into a fresh
   table in a staging schema. Memory holds one user at a time.
2. verify: read the new table back and compare its row count and a checksum
   with those of the rows the replay produced.
3. catch up: apply the events recorded since the snapshot, as the projector
   does, until the new table is close to the head.
4. swap: in one transaction, holding the lock every write to the live table
   takes, apply the last few events, drop the live table, move the new one into
   its place and hand over the tracking position. Readers wait for the swap's
   lock at most a moment, and then read the new table; none sees a missing or
   half-built one. https://www.postgresql.org/docs/current/sql-altertable.html

Commands keep being recorded throughout, and the live projector keeps the live
table current until the swap. A rebuild killed at any point leaves the live
table as it was; the next one drops the leftover staging schema and starts over.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from ledger import events_table
from ledger.application import Ledger
from ledger.db import Database
from ledger.domain import UserEvent, UserState
from projections import status as st
from projections import users_table
from projections.history import ReplayError, replay_all
from projections.projector import Failure, apply_events, decode_rows
from projections.rebuild_progress import Digest, Progress, RebuildResult
from projections.users import UsersProjection
from projections.users_table import Table

log = logging.getLogger(__name__)

STAGING_SCHEMA = "ledger_rebuild"
#: How long the swap waits for its locks before trying again. While it waits,
#: new readers of the users table queue behind it: they wait at most this long.
SWAP_LOCK_TIMEOUT = "200ms"
#: A long audit (or a long read) holds the live table; the swap keeps trying.
CATCH_UP_BATCH = 5000


class RebuildError(Exception):
    """The rebuild stopped; the live table is as it was."""


class RebuildInProgress(RebuildError):
    pass


class Rebuild:
    def __init__(
        self,
        database: Database,
        ledger: Ledger,
        projection: UsersProjection | None = None,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        report_every: float = 0.5,
    ) -> None:
        self.database = database
        self.ledger = ledger
        self.projection = projection or UsersProjection()
        self.name = self.projection.name
        self.staging_tracking = f"{self.name}:rebuild"
        self._on_progress = on_progress
        self._report_every = report_every
        self._last_report = 0.0
        self._tracking = st.tracking_recorder(ledger.datastore)

    def run(self) -> RebuildResult:
        started = time.monotonic()
        with self.database.connect() as control:
            got = control.execute(
                "SELECT pg_try_advisory_lock(%s)", (st.rebuild_lock(self.name),)
            ).fetchone()
            if not (got and got[0]):
                raise RebuildInProgress(f"a rebuild of {self.name!r} is already running")
            # Requests made from now on ask for another rebuild after this one.
            # (The database's clock, the one that stamps requests.)
            row = control.execute("SELECT now()").fetchone()
            requested_before = row[0] if row and isinstance(row[0], datetime) else datetime.now(UTC)
            try:
                return self._run(control, started, requested_before)
            except RebuildError as e:
                # It would fail the same way again: report it, and stop asking.
                with _quietly():
                    st.write_status(
                        control,
                        self.name,
                        rebuild={"phase": "failed", "error": str(e)},
                        rebuild_requested=None,
                    )
                raise
            except Exception as e:
                # A lost connection, say: the request stands, and is tried again.
                with _quietly():
                    st.write_status(
                        control, self.name, rebuild={"phase": "interrupted", "error": str(e)}
                    )
                raise
            finally:
                with _quietly():
                    drop_staging(control)

    def _run(
        self, control: psycopg.Connection[Any], started: float, requested_before: datetime
    ) -> RebuildResult:
        drop_staging(control)
        with control.transaction():
            users_table.create(control, STAGING_SCHEMA, self.projection)
        table = users_table.describe(control, STAGING_SCHEMA, self.projection)

        progress = Progress("copying")
        target, written = self._copy(table, progress, control)
        progress.phase = "verifying"
        self._report(progress, control, force=True)
        self._verify(control, table, written)

        progress.phase = "catching-up"
        position = self._catch_up(control, table, target, progress)
        progress.phase = "swapping"
        self._report(progress, control, force=True)
        position = self._swap(control, table, position, progress, requested_before)
        progress.phase = "done"
        progress.position = position
        self._report(progress, control, force=True)
        return RebuildResult(
            self.projection.version,
            written.users,
            progress.events,
            position,
            time.monotonic() - started,
        )

    # -- 1. copy --------------------------------------------------------------

    def _copy(
        self, table: Table, progress: Progress, control: psycopg.Connection[Any]
    ) -> tuple[int, Digest]:
        """Fold every user's history into the staging tables, from one
        snapshot, a user at a time: the users row, and the rows of every grant
        the user ever had. Returns the snapshot's head position and what was
        written, to check the tables against."""
        written = Digest()
        with (
            self.database.connect(autocommit=False) as reader,
            self.database.connect(autocommit=False) as writer,
            self.database.connect(autocommit=False) as grants_writer,
        ):
            reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            reader.read_only = True
            target = events_table.head(reader)
            progress.target = target
            self._report(progress, control, force=True)
            grants: dict[str, tuple[Any, ...]] = {}

            def on_event(position: int) -> None:
                progress.events += 1
                if progress.events % 10_000 == 0:
                    progress.position = position
                    self._report(progress, control)

            def on_step(event: UserEvent, after: UserState, position: int) -> None:
                for grant_id in event.touched_grants(after):
                    grant = after.grant(grant_id)
                    if grant is not None:
                        kept = grants.get(grant_id)
                        first = position if kept is None else kept[-1]
                        grants[grant_id] = table.grant_row(after.id, grant, first)

            def rows(copy_grants: Any) -> Iterator[tuple[Any, ...]]:
                replay = replay_all(self.ledger, reader, target, on_event=on_event, on_step=on_step)
                for state, position in replay:
                    for grant_row in grants.values():
                        copy_grants.write_row(grant_row)
                        written.add_grant(grant_row)
                    grants.clear()
                    row = table.row(state, position)
                    written.add_user(row)
                    progress.users = written.users
                    yield row

            assert table.grants is not None  # the staging tables are this release's
            try:
                with grants_writer.cursor() as curs, curs.copy(table.grants.copy_query()) as copy:
                    table.copy(writer, rows(copy))
                st.reset_position(writer, self.staging_tracking, target)
                writer.commit()
                grants_writer.commit()
            except ReplayError as e:
                raise RebuildError(str(e)) from e
            reader.rollback()
        progress.position = target
        return target, written

    # -- 2. verify ------------------------------------------------------------

    def _verify(self, control: psycopg.Connection[Any], table: Table, written: Digest) -> None:
        found = Digest()
        with control.transaction():
            for state, position in table.scan(control):
                found.add_user(table.row(state, position))
            assert table.grants is not None
            for grant in table.grants.scan(control):
                found.add_grant(table.grants.pick(grant))
        if found != written:
            raise RebuildError(
                f"the new tables do not match the replay: {found}, expected {written}"
            )

    # -- 3. catch up ------------------------------------------------------------

    def _catch_up(
        self, conn: psycopg.Connection[Any], table: Table, position: int, progress: Progress
    ) -> int:
        """Apply events recorded since the snapshot until few are left."""
        while True:
            with conn.transaction():
                applied, position = self._apply_after(conn, table, position, progress)
            if applied < CATCH_UP_BATCH:
                return position

    def _apply_after(
        self, conn: psycopg.Connection[Any], table: Table, position: int, progress: Progress
    ) -> tuple[int, int]:
        rows = conn.execute(events_table.AFTER, (position, CATCH_UP_BATCH)).fetchall()
        if not rows:
            return 0, position
        recorded, failure = decode_rows(self.ledger, rows)
        last, apply_failure = apply_events(conn, self.ledger, table, recorded)
        failure = apply_failure or failure
        if failure is not None:
            raise RebuildError(_describe(failure))
        assert last is not None
        st.record_position(self._tracking, conn, self.staging_tracking, last)
        progress.events += len(rows)
        progress.position = last
        progress.target = max(progress.target, last)
        return len(rows), last

    # -- 4. swap --------------------------------------------------------------

    def _swap(
        self,
        conn: psycopg.Connection[Any],
        table: Table,
        position: int,
        progress: Progress,
        requested_before: datetime,
    ) -> int:
        # Each try holds its locks for SWAP_LOCK_TIMEOUT at most, so readers and
        # the live projector are never held up longer; it tries until it gets
        # them, catching up meanwhile (starting over would copy everything again).
        attempt = 0
        while True:
            attempt += 1
            try:
                with conn.transaction():
                    conn.execute(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'")
                    # Waits for the live projector's batch in flight, and holds
                    # off its next one until the new table is in place.
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (st.table_lock(self.name),))
                    while True:
                        applied, position = self._apply_after(conn, table, position, progress)
                        if applied < CATCH_UP_BATCH:
                            break
                    for name in users_table.TABLE_NAMES:
                        live = sql.Identifier(users_table.LIVE_SCHEMA, name)
                        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(live))
                        conn.execute(
                            sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                                sql.Identifier(STAGING_SCHEMA, name),
                                sql.Identifier(users_table.LIVE_SCHEMA),
                            )
                        )
                    st.reset_position(conn, self.name, position)
                    st.drop_position(conn, self.staging_tracking)
                    st.rebuilt(conn, self.name, self.projection.version, requested_before)
                    conn.execute("SELECT pg_notify(%s, %s)", (st.POSITION_CHANNEL, str(position)))
                    conn.execute("SELECT pg_notify(%s, '')", (st.CONTROL_CHANNEL,))
                log.info("swapped in the rebuilt %r table at position %d", self.name, position)
                return position
            except psycopg.errors.LockNotAvailable:
                log_at = logging.WARNING if attempt % 100 == 0 else logging.DEBUG
                log.log(log_at, "swap try %d could not get its locks in time; retrying", attempt)
                time.sleep(random.uniform(0.1, 0.5))  # noqa: S311  (not a secret)

    # -- reporting ----------------------------------------------------------------

    def _report(
        self, progress: Progress, control: psycopg.Connection[Any], *, force: bool = False
    ) -> None:
        now = time.monotonic()
        if not force and now - self._last_report < self._report_every:
            return
        self._last_report = now
        if self._on_progress is not None:
            self._on_progress(progress)
        with _quietly():
            st.write_status(control, self.name, rebuild=progress.as_dict())


def drop_staging(conn: psycopg.Connection[Any]) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(STAGING_SCHEMA)))


def _describe(failure: Failure) -> str:
    return (
        f"cannot apply the event at position {failure.position} ({failure.event_type}, "
        f"{failure.user_id!r} version {failure.version}): {failure.message}"
    )


class _quietly:
    """Best-effort bookkeeping: a status row that cannot be written is no reason
    to fail a rebuild, or to hide the error that stopped it."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> bool:
        if exc_type is not None and issubclass(exc_type, psycopg.Error):
            log.warning("could not record rebuild progress", exc_info=True)
            return True
        return False
