"""Every hold, as last recorded: written in the same transaction as the events
that place and close it (ledger.writer.alongside), so that it is never behind
them. A settle or release of a hold that has left the user's state (closed
before the user's last event) learns here how it closed; the API lists a
user's holds from here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson

from ledger import literals as sql
from ledger.db import Table
from ledger.domain import Balance, Hold

TABLE = "ledger_holds"

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    user_id         text        NOT NULL,
    hold_id         text        NOT NULL,
    balance         text        NOT NULL,
    amount          integer     NOT NULL,
    status          text        NOT NULL,
    reason          text,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    settled_amount  integer,
    closed_at       timestamptz,
    grants          jsonb       NOT NULL,  -- [[grant_id, amount], ...] it holds of each
    position        bigint      NOT NULL,  -- of the event that placed it
    PRIMARY KEY (user_id, hold_id)
)
"""

CREATE_INDEX = f"CREATE INDEX IF NOT EXISTS {TABLE}_by_position ON {TABLE} (user_id, position)"

DEFINITION = Table.of(TABLE, CREATE_TABLE, CREATE_INDEX)

COLUMNS = (
    "user_id, hold_id, balance, amount, status, reason, created_at, expires_at, "
    "settled_amount, closed_at, grants, position"
)

#: Some holds of some users, by (user, hold) pairs.
LOOKUP = (
    f"SELECT h.{COLUMNS.replace(', ', ', h.')} FROM unnest(%b::text[], %b::text[]) AS k(u, h_id) "
    f"JOIN {TABLE} AS h ON h.user_id = k.u AND h.hold_id = k.h_id"
)

#: Which holds have a status, as a read at %(now)s sees them (open past its
#: expiry is expired, whether or not its HoldExpired is recorded yet).
_HAVING_STATUS = {
    None: "TRUE",
    "open": "status = 'open' AND expires_at > %(now)s",
    "expired": "(status = 'expired' OR (status = 'open' AND expires_at <= %(now)s))",
    "settled": "status = 'settled'",
    "released": "status = 'released'",
}


def of_user(status: str | None) -> str:
    """A user's holds (%(user_id)s) with `status`, placed after %(after)s (a
    position), oldest first, at most %(limit)s."""
    return (
        f"SELECT {COLUMNS} FROM {TABLE} WHERE user_id = %(user_id)s "
        f"AND position > %(after)s AND {_HAVING_STATUS[status]} ORDER BY position LIMIT %(limit)s"
    )


ONE = f"SELECT {COLUMNS} FROM {TABLE} WHERE user_id = %s AND hold_id = %s"

POSITION_OF = f"SELECT position FROM {TABLE} WHERE user_id = %s AND hold_id = %s"


def hold_of(row: Sequence[Any]) -> tuple[str, Hold, int]:
    """A LOOKUP, OF_USER or ONE row: the user, the hold, its placement's position."""
    (user_id, hold_id, balance, amount, status, reason, created, expires, settled, closed) = row[
        :10
    ]
    grants = row[10] if not isinstance(row[10], str | bytes) else orjson.loads(row[10])
    hold = Hold(
        id=hold_id,
        balance=Balance(balance),
        amount=amount,
        reason=reason,
        created_at=created,
        expires_at=expires,
        grants=tuple((str(g), int(a)) for g, a in grants),
        status=status,
        settled_amount=settled,
        closed_at=closed,
    )
    return user_id, hold, int(row[11])


#: Holds as last recorded, upserted (see `store_statement`).
_STORE = (
    f"INSERT INTO {TABLE} ({COLUMNS}) "
    "SELECT u, h, b, a::integer, s, r, c::timestamptz, e::timestamptz, sa::integer, "
    "cl::timestamptz, g::jsonb, p::bigint "
    "FROM (VALUES %s) AS v(u, h, b, a, s, r, c, e, sa, cl, g, p) "
    "ON CONFLICT (user_id, hold_id) DO UPDATE SET status = EXCLUDED.status, "
    "settled_amount = EXCLUDED.settled_amount, closed_at = EXCLUDED.closed_at"
)


def store_statement(rows: Iterable[tuple[str, Hold, int]]) -> str:
    """The upsert of (user, hold, position of placement) triples with their
    values written in (ledger.literals), for the round trip of the COMMIT."""
    values = []
    for user_id, hold, position in rows:
        grants = orjson.dumps([list(p) for p in hold.grants]).decode()
        values.append(
            f"({sql.text(user_id)},{sql.text(hold.id)},{sql.text(hold.balance.value)},"
            f"{sql.integer(hold.amount)},{sql.text(str(hold.status))},{sql.text(hold.reason)},"
            f"{sql.time(hold.created_at)},{sql.time(hold.expires_at)},"
            f"{sql.integer(hold.settled_amount)},{sql.time(hold.closed_at)},{sql.text(grants)},"
            f"{sql.integer(position)})"
        )
    return _STORE % ",".join(values)


def status_at(hold: Hold, now: datetime) -> Hold:
    """As a read at `now` shows it: open past its expiry is expired, whether or
    not its HoldExpired is recorded yet."""
    if hold.is_open and hold.expires_at <= now:
        return hold._replace(status="expired", closed_at=hold.expires_at)
    return hold
