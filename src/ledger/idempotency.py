"""Idempotency keys: the first outcome of each key, stored in the same transaction
as the events it produced, so a retry can never record twice.

The outcome is kept as it was first given, the event and user as they were
shown then: a retry gets the first response again, even after a release that
adds fields to it. Keys are kept until pruned (`ledger db prune-keys`): a
request repeated after its key is pruned is a new request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg

from ledger.db import Table
from ledger.errors import IdempotencyKeyReused

TABLE = "ledger_idempotency_keys"

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    principal   text        NOT NULL,
    key         text        NOT NULL,
    fingerprint text        NOT NULL,
    outcome     json        NOT NULL,  -- json keeps key order: a replay is byte-identical
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, key)
)
"""

DEFINITION = Table.of(TABLE, CREATE_TABLE)

LOOKUP = (
    "SELECT s.principal, s.key, s.fingerprint, s.outcome "
    "FROM unnest(%b::text[], %b::text[]) AS k(principal, key) "
    f"CROSS JOIN LATERAL (SELECT * FROM {TABLE} AS t "
    "WHERE t.principal = k.principal AND t.key = k.key) AS s"
)

STORE = (
    f"INSERT INTO {TABLE} (principal, key, fingerprint, outcome) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::json[])"
)


def fingerprint(kind: str, fields: dict[str, Any]) -> str:
    """Equal for equal requests: how a reused key is recognised."""
    body = orjson.dumps([kind, fields], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A client's key, scoped to whoever sent it (one API key cannot see another's)."""

    principal: str
    key: str


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    fingerprint: str
    outcome: dict[str, Any]


def lookup_params(keys: Sequence[IdempotencyKey]) -> tuple[list[str], list[str]]:
    return [k.principal for k in keys], [k.key for k in keys]


def first_outcome(stored: StoredOutcome, fingerprint: str) -> dict[str, Any]:
    """The outcome first given under a key, for a request with `fingerprint`;
    IdempotencyKeyReused if the key was first used with another request."""
    if stored.fingerprint != fingerprint:
        raise IdempotencyKeyReused("this Idempotency-Key was first used with a different request")
    return stored.outcome


def stored(rows: Sequence[tuple[Any, ...]]) -> dict[IdempotencyKey, StoredOutcome]:
    """The LOOKUP query's rows, by key."""
    return {
        IdempotencyKey(principal, key): StoredOutcome(fingerprint, outcome)
        for principal, key, fingerprint, outcome in rows
    }


def store_params(
    records: Sequence[tuple[IdempotencyKey, str, dict[str, Any]]],
) -> tuple[list[str], list[str], list[str], list[str]]:
    """STORE's parameters for (key, fingerprint, outcome) triples."""
    return (
        [k.principal for k, _, _ in records],
        [k.key for k, _, _ in records],
        [fingerprint for _, fingerprint, _ in records],
        [orjson.dumps(outcome).decode() for _, _, outcome in records],
    )


def prune(conn: psycopg.Connection[Any], before: datetime) -> int:
    """Forget the keys first used before `before`; how many. One statement: it
    takes row locks only, so commands go on meanwhile (a retry of a key being
    pruned, before the prune commits, still gets the first answer)."""
    cursor = conn.execute(f"DELETE FROM {TABLE} WHERE created_at < %s", (before,))
    return cursor.rowcount
