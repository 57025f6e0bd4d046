"""Where a projection stands, kept in PostgreSQL so every process sees the same:
its tracking position (the library's tracking table), the version of its live
table, its error if it failed, and a rebuild's progress."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg.rows import dict_row

from ledger.db import advisory_key

TRACKING_TABLE = "projection_tracking"
STATUS_TABLE = "projection_status"

CREATE_STATUS_TABLE = f"""
CREATE TABLE IF NOT EXISTS {STATUS_TABLE} (
    name               text PRIMARY KEY,
    version            text NOT NULL,
    error              jsonb,
    rebuild_requested  timestamptz,
    rebuild            jsonb,
    updated_at         timestamptz NOT NULL DEFAULT now()
)
"""

#: Channel the projector notifies, with its new position, after each commit.
POSITION_CHANNEL = "ledger_projection_position"
#: Channel that asks the active projector to look at its status row again.
CONTROL_CHANNEL = "ledger_projection_control"


def leader_lock(name: str) -> int:
    """Held, for as long as it runs, by the one active projector of `name`."""
    return advisory_key(f"projection:{name}:leader")


def table_lock(name: str) -> int:
    """Held by each transaction that writes the live table, and by the swap."""
    return advisory_key(f"projection:{name}:table")


def rebuild_lock(name: str) -> int:
    """Held by the one rebuild of `name` that is running."""
    return advisory_key(f"projection:{name}:rebuild")


def tracking_recorder(datastore: PostgresDatastore) -> PostgresTrackingRecorder:
    return PostgresTrackingRecorder(datastore, tracking_table_name=TRACKING_TABLE)


#: A projection's position (by its tracking name).
SELECT_POSITION = f"SELECT notification_id FROM {TRACKING_TABLE} WHERE application_name = %s"


def read_position(conn: psycopg.Connection[Any], tracking_name: str, *, lock: bool) -> int:
    query = SELECT_POSITION
    if lock:
        query += " FOR UPDATE"
    row = conn.execute(query, (tracking_name,)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def record_position(
    recorder: PostgresTrackingRecorder, conn: psycopg.Connection[Any], name: str, position: int
) -> None:
    """Move the tracking position forward, in the caller's transaction."""
    with conn.cursor(row_factory=dict_row) as curs:
        recorder._insert_tracking(curs, Tracking(name, position))  # noqa: SLF001


def reset_position(conn: psycopg.Connection[Any], tracking_name: str, position: int) -> None:
    """Set a position outright: a fresh table starts from 0, a swapped one from
    wherever its builder got to."""
    conn.execute(
        f"INSERT INTO {TRACKING_TABLE} (application_name, notification_id) VALUES (%s, %s) "
        "ON CONFLICT (application_name) DO UPDATE SET notification_id = EXCLUDED.notification_id",
        (tracking_name, position),
    )


def drop_position(conn: psycopg.Connection[Any], tracking_name: str) -> None:
    conn.execute(f"DELETE FROM {TRACKING_TABLE} WHERE application_name = %s", (tracking_name,))


@dataclass(frozen=True)
class StatusRow:
    name: str
    version: str
    error: dict[str, Any] | None
    rebuild_requested: datetime | None
    rebuild: dict[str, Any] | None


def read_status(conn: psycopg.Connection[Any], name: str) -> StatusRow | None:
    with conn.cursor(row_factory=dict_row) as curs:
        curs.execute(
            f"SELECT name, version, error, rebuild_requested, rebuild FROM {STATUS_TABLE} "
            "WHERE name = %s",
            (name,),
        )
        row = curs.fetchone()
    return StatusRow(**row) if row else None


def write_status(conn: psycopg.Connection[Any], name: str, **values: Any) -> None:
    """Update some of a status row's columns (json columns take dicts)."""
    assignments = ", ".join(f"{column} = %s" for column in values)
    params = [orjson.dumps(v).decode() if isinstance(v, dict) else v for v in values.values()]
    conn.execute(
        f"UPDATE {STATUS_TABLE} SET {assignments}, updated_at = now() WHERE name = %s",
        [*params, name],
    )


def new_table(conn: psycopg.Connection[Any], name: str, version: str) -> None:
    """A fresh live table of `version`, projected from position 0."""
    reset_position(conn, name, 0)
    conn.execute(
        f"INSERT INTO {STATUS_TABLE} (name, version) VALUES (%s, %s) "
        "ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version, error = NULL, "
        "updated_at = now()",
        (name, version),
    )


def request_rebuild(conn: psycopg.Connection[Any], name: str, *, unless_requested: bool) -> None:
    """Ask the active projector to rebuild `name` (it starts within a moment):
    now, or, `unless_requested`, only if no request is pending."""
    when = "COALESCE(rebuild_requested, now())" if unless_requested else "now()"
    with conn.transaction():
        conn.execute(
            f"UPDATE {STATUS_TABLE} SET rebuild_requested = {when}, updated_at = now() "
            "WHERE name = %s",
            (name,),
        )
        conn.execute("SELECT pg_notify(%s, %s)", (CONTROL_CHANNEL, name))


def rebuilt(
    conn: psycopg.Connection[Any], name: str, version: str, requested_before: datetime
) -> None:
    """The live table is now a rebuilt one of `version`: the requests made before
    its rebuild started are met, any later one stands."""
    conn.execute(
        f"UPDATE {STATUS_TABLE} SET version = %s, error = NULL, rebuild = NULL, "
        "rebuild_requested = CASE WHEN rebuild_requested <= %s THEN NULL "
        "ELSE rebuild_requested END, updated_at = now() WHERE name = %s",
        (version, requested_before, name),
    )


def ensure_status(conn: psycopg.Connection[Any], name: str, version: str) -> None:
    conn.execute(
        f"INSERT INTO {STATUS_TABLE} (name, version) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (name, version),
    )


def lock_is_held(conn: psycopg.Connection[Any], key: int) -> bool:
    """Whether a session of this database holds the advisory lock `key`
    (one-argument form). Advisory locks are per database; pg_locks shows the
    whole server's."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND classid = ((%(key)s::bigint >> 32) & 4294967295)::oid "
        "AND objid = (%(key)s::bigint & 4294967295)::oid AND objsubid = 1)",
        {"key": key},
    ).fetchone()
    return bool(row and row[0])
