"""Every statement on the events table, in one place.

The table is the eventsourcing library's (`ledger_events`: notification_id,
originator_id, originator_version, topic, state): created by its DDL, locked by
its lock statements. Everything else here is the ledger's own: batched inserts
and reads, in the library's columns. `notification_id` is what the API calls
an event's position.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

TABLE = "ledger_events"

#: LIMIT takes a bigint: no limit.
NO_LIMIT = 2**62


def limit(count: int | None) -> int:
    """A row count as LIMIT can take it: none (None) or past a bigint is no limit.
    Every LIMIT the ledger computes (a page plus one, a version less another)
    goes through here, so that no arithmetic on a client's number leaves bigint."""
    return NO_LIMIT if count is None else max(0, min(count, NO_LIMIT))


# -- reads of the log ------------------------------------------------------------

#: Every user's events after a position, in the order they were committed.
AFTER = (
    "SELECT notification_id, originator_id, originator_version, topic, state "
    f"FROM {TABLE} WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
)

#: A user's events after a version, oldest first.
OF_USER = (
    "SELECT originator_id, originator_version, topic, state, notification_id "
    f"FROM {TABLE} WHERE originator_id = %s AND originator_version > %s "
    "ORDER BY originator_version LIMIT %s"
)

#: A user's events at positions up to one, oldest first.
OF_USER_UP_TO = (
    "SELECT originator_version, topic, state, notification_id FROM "
    f"{TABLE} WHERE originator_id = %s AND notification_id <= %s "
    "ORDER BY originator_version"
)

#: Some users' events at positions up to one, user by user, oldest first.
OF_USERS_UP_TO = (
    "SELECT originator_id, originator_version, topic, state, notification_id FROM "
    f"{TABLE} WHERE originator_id = ANY(%s) AND notification_id <= %s "
    "ORDER BY originator_id, originator_version"
)

#: Every event up to a position (for replays of the whole ledger).
ALL_BY_USER = (
    "SELECT originator_id, originator_version, topic, state, notification_id "
    f"FROM {TABLE} WHERE notification_id <= %s "
    "ORDER BY originator_id, originator_version"
)

HAS_EVENTS = f"SELECT 1 FROM {TABLE} WHERE originator_id = %s LIMIT 1"

HEAD = f"SELECT COALESCE(MAX(notification_id), 0) FROM {TABLE}"


def head(conn: psycopg.Connection[Any]) -> int:
    """The position of the newest event (0 for none)."""
    row = conn.execute(HEAD).fetchone()
    return int(row[0]) if row else 0


def ids_without_events(
    conn: psycopg.Connection[Any], users: sql.Composable, position: int, limit: int = 1000
) -> list[str]:
    """Ids in the `users` table (a qualified name) that have no event at or
    before `position`."""
    query = sql.SQL(
        "SELECT u.id FROM {} AS u WHERE NOT EXISTS (SELECT 1 FROM {} AS e "
        "WHERE e.originator_id = u.id AND e.notification_id <= %s) ORDER BY u.id LIMIT %s"
    ).format(users, sql.Identifier(TABLE))
    return [str(row[0]) for row in conn.execute(query, (position, limit)).fetchall()]


# -- the writer's statements (under the library's table lock) ------------------------

# LATERAL makes PostgreSQL look each user up in the primary key; a plain join
# lets a generic (prepared) plan scan the whole table instead.
NEWER_THAN = f"""
SELECT e.originator_id, e.originator_version, e.topic, e.state
FROM unnest(%b::text[], %b::bigint[]) AS known(id, version)
CROSS JOIN LATERAL (
    SELECT originator_id, originator_version, topic, state FROM {TABLE}
    WHERE originator_id = known.id AND originator_version > known.version
    ORDER BY originator_version
) AS e
"""

# The library's insert statement passes events as an array of its composite type,
# which psycopg can only send as escaped text: a third of a batch's time. This is
# the same insert, into the same columns, with one array per column instead.
INSERT = (
    f"INSERT INTO {TABLE} (originator_id, originator_version, topic, state) "
    "SELECT * FROM unnest(%b::text[], %b::bigint[], %b::text[], %b::bytea[]) "
    "RETURNING notification_id"
)

#: The channel the library NOTIFYs on each insert (the table's name), which
#: followers of the log LISTEN to.
CHANNEL = TABLE


def render(statement: object) -> str:
    """One of the library's statements (lock, notify, DDL) as plain SQL."""
    if isinstance(statement, sql.Composable):
        return statement.as_string()
    if isinstance(statement, bytes):
        return statement.decode()
    return str(statement)


# -- times, read without decoding ---------------------------------------------------

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


def recorded_at(state: bytes) -> datetime | None:
    """When the stored event `state` was recorded, read without decoding it."""
    match = _TIMESTAMP.search(state)
    if match is None:
        return None
    try:
        return datetime.fromisoformat(match[1].decode())
    except ValueError:
        return None
