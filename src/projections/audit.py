"""Audit: check the projected users table against a replay of the history.

Both sides are read in one REPEATABLE READ snapshot, and the replay stops at the
projection's own tracking position, so a projection that is merely behind is
not reported as wrong.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql

from ledger import codec, events_table
from ledger.application import Ledger
from ledger.db import Database
from ledger.domain import UserState
from ledger.times import timestamp
from projections import status as st
from projections import users_table
from projections.history import replay_all, replay_user
from projections.users import USER_COLUMNS, UsersProjection
from projections.views import user_view

CHECKED_FIELDS = USER_COLUMNS[1:]  # all but the id
_CHUNK = 1000


@dataclass(frozen=True)
class UserAudit:
    user_id: str
    position: int
    projected: dict[str, Any] | None
    replayed: dict[str, Any] | None
    differences: list[dict[str, Any]]

    @property
    def consistent(self) -> bool:
        return not self.differences

    def as_dict(self) -> dict[str, Any]:
        return {
            "consistent": self.consistent,
            "projected": self.projected,
            "replayed": self.replayed,
            "differences": self.differences,
            "position": self.position,
        }


@dataclass
class LedgerAudit:
    position: int
    users_checked: int = 0
    events_replayed: int = 0
    mismatches: list[UserAudit] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return not self.mismatches


def compare(
    user_id: str,
    position: int,
    projected: dict[str, Any] | None,
    replayed: tuple[UserState, int] | None,
) -> UserAudit:
    """A users row (as read, what an app reading the table sees) against the
    replay: each column the row has, and the whole state it keeps for the
    projector (`fold_state`)."""
    projected_view = _row_view(projected) if projected else None
    replayed_view = user_view(*replayed) if replayed else None
    differences: list[dict[str, Any]] = []
    if projected is None or projected_view is None or replayed is None or replayed_view is None:
        if (projected is None) != (replayed is None):
            differences.append(
                {
                    "field": "exists",
                    "projected": projected is not None,
                    "replayed": replayed is not None,
                }
            )
    else:
        differences = [
            {"field": name, "projected": projected_view[name], "replayed": replayed_view[name]}
            for name in CHECKED_FIELDS
            if name in projected_view and projected_view[name] != replayed_view[name]
        ]
        kept = projected.get("fold_state")
        if kept is not None and not _keeps(kept, replayed[0]):
            differences.append(
                {"field": "fold_state", "projected": "differs", "replayed": "the fold's state"}
            )
    return UserAudit(user_id, position, projected_view, replayed_view, differences)


def _keeps(kept: Any, state: UserState) -> bool:
    """Whether a row keeps `state`, read as the projector reads it (in the
    order the fold keeps grants in, whichever order the row lists them in:
    rows written by an earlier release list them as they were granted)."""
    try:
        return codec.from_dict(kept if isinstance(kept, dict) else orjson.loads(kept)) == state
    except (KeyError, TypeError, ValueError, AttributeError):
        return False


def _row_view(row: dict[str, Any]) -> dict[str, Any]:
    """A row as a User, of the columns it has."""
    return {name: _shown(row[name]) for name in USER_COLUMNS if name in row}


def _shown(value: Any) -> Any:
    return timestamp(value) if isinstance(value, datetime) else value


@contextlib.contextmanager
def snapshot(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A read-only transaction that reads the users table and the history in one
    snapshot, taken only once no rebuild is swapping a new users table in (the
    lock waits for a swap in progress, and holds off the next until the block
    ends): else the snapshot could pair the old table's position with the new
    table. `conn` is in autocommit mode (a pooled connection, say).
    https://www.postgresql.org/docs/current/explicit-locking.html"""
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(
                sql.Identifier(users_table.LIVE_SCHEMA, users_table.TABLE_NAME)
            )
        )
        yield


def audit_user(
    conn: psycopg.Connection[Any],
    ledger: Ledger,
    user_id: str,
    projection: UsersProjection | None = None,
) -> UserAudit | None:
    """The projected row against the replayed history; None if neither has the user."""
    projection = projection or UsersProjection()
    with snapshot(conn):
        position = st.read_position(conn, projection.name, lock=False)
        table = users_table.describe(conn, users_table.LIVE_SCHEMA, projection)
        projected = table.read_rows(conn, [user_id]).get(user_id)
        replayed = replay_user(ledger, conn, user_id, position)
    if projected is None and replayed is None:
        return None
    return compare(user_id, position, projected, replayed)


def audit_all(
    database: Database,
    ledger: Ledger,
    projection: UsersProjection | None = None,
    *,
    on_progress: Callable[[LedgerAudit, int], None] | None = None,
) -> LedgerAudit:
    """Every user, streamed: the replay yields one user at a time, and the
    projected rows are fetched a chunk at a time, so memory stays bounded."""
    projection = projection or UsersProjection()
    with database.connect() as conn, snapshot(conn):
        position = st.read_position(conn, projection.name, lock=False)
        table = users_table.describe(conn, users_table.LIVE_SCHEMA, projection)
        report = LedgerAudit(position)

        def counted(event_position: int) -> None:
            report.events_replayed += 1
            if on_progress is not None and report.events_replayed % 10_000 == 0:
                on_progress(report, event_position)

        for chunk in _chunks(replay_all(ledger, conn, position, on_event=counted)):
            projected = table.read_rows(conn, [state.id for state, _ in chunk])
            for state, last in chunk:
                report.users_checked += 1
                result = compare(state.id, position, projected.get(state.id), (state, last))
                if not result.consistent:
                    report.mismatches.append(result)
        for user_id in _rows_without_history(conn, position):
            report.users_checked += 1
            report.mismatches.append(
                compare(user_id, position, table.read_rows(conn, [user_id]).get(user_id), None)
            )
    if on_progress is not None:
        on_progress(report, position)
    return report


def _chunks(
    items: Iterator[tuple[UserState, int]],
) -> Iterator[list[tuple[UserState, int]]]:
    chunk: list[tuple[UserState, int]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _rows_without_history(conn: psycopg.Connection[Any], position: int) -> list[str]:
    live = sql.Identifier(users_table.LIVE_SCHEMA, users_table.TABLE_NAME)
    return events_table.ids_without_events(conn, live, position)


@dataclass
class LedgerAt:
    """The whole ledger as of a time: what a month-end report needs."""

    at: datetime
    position: int
    users: int = 0
    free_credits: int = 0
    free_chat_messages: int = 0
    levels: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "position": self.position,
            "users": self.users,
            "free_credits": self.free_credits,
            "free_chat_messages": self.free_chat_messages,
            "levels": self.levels,
        }


def ledger_at(database: Database, ledger: Ledger, at: datetime) -> LedgerAt:
    """Every user replayed to `at`, summed: users, balances outstanding, levels."""
    with database.connect() as conn, snapshot(conn):
        position = events_table.head(conn)
        totals = LedgerAt(at, position)
        for state, _ in replay_all(ledger, conn, position, at=at):
            totals.users += 1
            totals.free_credits += state.free_credits or 0
            totals.free_chat_messages += state.free_chat_messages or 0
            totals.levels[state.level] = totals.levels.get(state.level, 0) + 1
    return totals
