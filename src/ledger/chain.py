"""The hash chain: every event, in position order, chained to the one before it,
so that an event changed, removed or inserted behind the ledger's back is seen.

The hash of the event at a position is SHA-256 over the previous event's hash
(32 zero bytes before the first) and the event exactly as the events table
stores it:

    hash = SHA-256( previous_hash                     32 bytes
                  || position                          8 bytes, big-endian
                  || len(user_id)  || user_id          4 bytes big-endian, UTF-8
                  || version                           8 bytes, big-endian
                  || len(topic)    || topic            4 bytes big-endian, UTF-8
                  || len(state)    || state )          4 bytes big-endian, the stored bytes

`state` is the stored JSON of the event: its data, its metadata (`cause`) and
its recorded time (`timestamp`); `topic` names its type. Hashes are kept in
`ledger_chain`, one row per event, written in the same transaction as the
event by the writer (a part written alongside), under the events table's lock,
so the chain has no forks. Events recorded otherwise (a history from before
the chain, the library's own insert) are chained after the fact, in position
order, under the same lock (`seal`).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg

from ledger import events_table
from ledger import literals as sql
from ledger.db import Table

TABLE = "ledger_chain"
GENESIS = bytes(32)

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    position  bigint PRIMARY KEY,  -- the event's notification_id
    hash      bytea  NOT NULL
)
"""
DEFINITION = Table.of(TABLE, CREATE_TABLE)

HEAD = f"SELECT position, hash FROM {TABLE} ORDER BY position DESC LIMIT 1"

#: The chain's head, and the events after it and before a position (at most a
#: number of them): what a batch must chain before its own events.
HEAD_AND_GAP = f"""
WITH head AS ({HEAD})
SELECT (SELECT position FROM head), (SELECT hash FROM head),
       e.notification_id, e.originator_id, e.originator_version, e.topic, e.state
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
    SELECT notification_id, originator_id, originator_version, topic, state
    FROM {events_table.TABLE}
    WHERE notification_id > COALESCE((SELECT position FROM head), 0)
      AND notification_id < %s
    ORDER BY notification_id LIMIT %s
) AS e ON true
"""

STORE = f"INSERT INTO {TABLE} (position, hash) SELECT * FROM unnest(%b::bigint[], %b::bytea[])"


def store_statement(positions: Sequence[int], hashes: Sequence[bytes]) -> str:
    """The links' rows with their values written in (ledger.literals), for a
    round trip that carries other statements too."""
    if len(positions) != len(hashes):
        raise ValueError("a position for each hash")
    rows = ",".join(
        f"({sql.integer(p)},{sql.bytea(h)})" for p, h in zip(positions, hashes, strict=True)
    )
    return f"INSERT INTO {TABLE} (position, hash) VALUES {rows}"


#: Events not chained yet, oldest first.
UNCHAINED = (
    "SELECT notification_id, originator_id, originator_version, topic, state "
    f"FROM {events_table.TABLE} WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
)

#: Every event and every chain row from a position on, side by side, in position
#: order: what `verify` walks. A row of one without the other is a removal or
#: an insertion.
WALK = f"""
SELECT COALESCE(e.notification_id, c.position) AS position,
       e.originator_id, e.originator_version, e.topic, e.state, c.hash
FROM {events_table.TABLE} AS e
FULL JOIN {TABLE} AS c ON c.position = e.notification_id
WHERE COALESCE(e.notification_id, c.position) > %s
ORDER BY 1
"""

HASH_AT = f"SELECT hash FROM {TABLE} WHERE position = %s"
PREVIOUS = f"SELECT position, hash FROM {TABLE} WHERE position < %s ORDER BY position DESC LIMIT 1"

_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")


def link(
    previous: bytes, position: int, user_id: str, version: int, topic: str, state: bytes
) -> bytes:
    """The hash of an event, chained to the one before it (the layout above)."""
    user, kind = user_id.encode(), topic.encode()
    return hashlib.sha256(
        b"".join(
            (
                previous,
                _U64.pack(position),
                _U32.pack(len(user)),
                user,
                _U64.pack(version),
                _U32.pack(len(kind)),
                kind,
                _U32.pack(len(state)),
                state,
            )
        )
    ).digest()


class Stored(NamedTuple):
    """An event as the table stores it, at its position."""

    position: int
    user_id: str
    version: int
    topic: str
    state: bytes


def chained(previous: bytes, events: Iterable[Stored]) -> tuple[list[int], list[bytes]]:
    """The positions and hashes of `events` (in position order) after `previous`."""
    positions, hashes = [], []
    for position, user_id, version, topic, state in events:
        previous = link(previous, position, user_id, version, topic, state)
        positions.append(position)
        hashes.append(previous)
    return positions, hashes


def stored(rows: Sequence[Sequence[Any]]) -> list[Stored]:
    """Events from (position, user, version, topic, state) rows."""
    return [Stored(int(p), str(u), int(v), str(t), bytes(s)) for p, u, v, t, s in rows]


def seal(conn: psycopg.Connection[Any], lock_statements: Sequence[str], limit: int) -> int:
    """Chain up to `limit` events not chained yet, in one transaction under the
    events table's lock (so the writer and this never chain at once); how many."""
    with conn.transaction():
        for statement in lock_statements:
            conn.execute(statement.encode())
        row = conn.execute(HEAD).fetchone()
        head, previous = (int(row[0]), bytes(row[1])) if row else (0, GENESIS)
        events = stored(conn.execute(UNCHAINED, (head, limit)).fetchall())
        if events:
            positions, hashes = chained(previous, events)
            conn.execute(STORE, (positions, hashes))
    return len(events)


def head(conn: psycopg.Connection[Any]) -> tuple[int, bytes] | None:
    row = conn.execute(HEAD).fetchone()
    return (int(row[0]), bytes(row[1])) if row else None


# -- verifying -------------------------------------------------------------------


@dataclass
class Verdict:
    """What a walk of the chain found."""

    checked: int = 0
    #: The last position whose link was checked, and its hash.
    position: int = 0
    hash: bytes | None = None
    #: The first position where the chain breaks, and how (None: intact).
    broken_at: int | None = None
    reason: str | None = None
    #: Events at the end not chained yet (a history still being sealed).
    unchained: int = 0

    @property
    def intact(self) -> bool:
        return self.broken_at is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "intact": self.intact,
            "checked": self.checked,
            "position": self.position,
            "hash": self.hash.hex() if self.hash is not None else None,
            "broken_at": self.broken_at,
            "reason": self.reason,
            "unchained": self.unchained,
        }


def verify(
    conn: psycopg.Connection[Any],
    *,
    after: int = 0,
    expect: tuple[int, bytes] | None = None,
    on_progress: Any = None,
) -> Verdict:
    """Walk the chain from the position after `after` (trusting the hash kept
    there) to its end, in one snapshot, streamed (memory does not grow with
    the history): every event's link recomputed from the one before. Then, with
    `expect` (a position and its hash, kept elsewhere), check that the chain
    still has it. Run inside a transaction (REPEATABLE READ, for one snapshot)."""
    verdict = Verdict()
    previous = GENESIS
    if after > 0:
        row = conn.execute(PREVIOUS, (after + 1,)).fetchone()
        if row is None or int(row[0]) != after:
            verdict.broken_at, verdict.reason = after, f"position {after} is not in the chain"
            return verdict
        previous, verdict.position, verdict.hash = bytes(row[1]), after, bytes(row[1])
    first_unchained: int | None = None
    with conn.cursor(name="chain_walk", binary=True) as curs:
        curs.itersize = 10_000
        curs.execute(WALK, (after,))
        for position, user_id, version, topic, state, kept in curs:
            if state is None:
                return _broken(verdict, position, "the event there was removed")
            if kept is None:
                first_unchained = first_unchained or position
                verdict.unchained += 1
                continue
            if first_unchained is not None:
                return _broken(
                    verdict, first_unchained, "an event there was inserted (it has no link)"
                )
            computed = link(previous, position, user_id, version, topic, bytes(state))
            if computed != bytes(kept):
                return _broken(
                    verdict,
                    position,
                    "the event there was changed, or one before it removed or inserted",
                )
            previous = computed
            verdict.checked += 1
            verdict.position, verdict.hash = position, computed
            if on_progress is not None and verdict.checked % 10_000 == 0:
                on_progress(verdict)
    if expect is not None:
        position, expected = expect
        row = conn.execute(HASH_AT, (position,)).fetchone()
        if row is None:
            return _broken(verdict, position, "the witnessed position is gone from the chain")
        if bytes(row[0]) != expected:
            return _broken(verdict, position, "the chain no longer has the witnessed hash there")
    return verdict


def _broken(verdict: Verdict, position: int, reason: str) -> Verdict:
    verdict.broken_at, verdict.reason = position, reason
    return verdict
