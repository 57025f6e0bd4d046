"""Idempotency keys: the first outcome of each key, stored in the same transaction
as the events it produced, so a retry can never record twice."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg.rows import DictRow

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


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A client's key, scoped to whoever sent it (one API key cannot see another's)."""

    principal: str
    key: str


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    fingerprint: str
    outcome: dict[str, Any]


def lookup(
    curs: psycopg.Cursor[DictRow], keys: Iterable[IdempotencyKey]
) -> dict[IdempotencyKey, StoredOutcome]:
    keys = list(keys)
    if not keys:
        return {}
    curs.execute(
        f"SELECT principal, key, fingerprint, outcome FROM {TABLE} "
        "WHERE (principal, key) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        ([k.principal for k in keys], [k.key for k in keys]),
    )
    return {
        IdempotencyKey(row["principal"], row["key"]): StoredOutcome(
            row["fingerprint"], row["outcome"]
        )
        for row in curs.fetchall()
    }


def store(
    curs: psycopg.Cursor[DictRow],
    records: Sequence[tuple[IdempotencyKey, str, dict[str, Any]]],
) -> None:
    """Record (key, fingerprint, outcome) triples."""
    if not records:
        return
    curs.execute(
        f"INSERT INTO {TABLE} (principal, key, fingerprint, outcome) "
        "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::json[])",
        (
            [k.principal for k, _, _ in records],
            [k.key for k, _, _ in records],
            [fingerprint for _, fingerprint, _ in records],
            [orjson.dumps(outcome).decode() for _, _, outcome in records],
        ),
    )
