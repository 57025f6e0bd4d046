"""The webhook routes' answers, and their Idempotency-Keys.

The secret is shown in the answer that makes it (a create, a rotation), and
to a retry of that request with the same Idempotency-Key: a client retries
because it lost the first answer. The key's stored answer never holds the
secret, only its SHA-256 (`secret_sha256`); a retry gets the first answer
with the endpoint's secret (or its previous one, while that still signs)
whose hash it is, or `"secret": null` once that secret no longer signs (it
was rotated away, or the endpoint was deleted)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row
from starlette.responses import Response

from api.bootstrap import Services
from api.integrations.webhooks import signing
from ledger import idempotency
from ledger.db import translate_errors
from ledger.idempotency import IdempotencyKey
from projections.webhooks import endpoints_table

Connection = psycopg.Connection[Any]


def json(body: Any, status: int = 200, *, replayed: bool = False) -> Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


def one(conn: Connection, query: str, params: Any) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as curs:
        curs.execute(query, params)
        return curs.fetchone()


def every(conn: Connection, query: str, params: Any) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as curs:
        curs.execute(query, params)
        return curs.fetchall()


def keyed(
    services: Services,
    key: IdempotencyKey | None,
    kind: str,
    fields: dict[str, Any],
    make: Callable[[Connection], tuple[int, dict[str, Any]]],
) -> Response:
    """`make`'s answer, in one transaction with the key's record of it (the
    secret's hash in place of the secret); or, for a key used before, the first
    answer again, with the secret it made if that still signs. Keys are
    looked up and stored under the lock the writer takes for its batches (as
    a rebuild request does): these requests are rare."""
    fingerprint = idempotency.fingerprint(kind, fields)
    with translate_errors(), services.pool.connection() as conn, conn.transaction():
        if key is not None:
            for statement in services.ledger.lock_statements:
                conn.execute(statement.encode())
            rows = conn.execute(idempotency.LOOKUP, idempotency.lookup_params([key])).fetchall()
            found = idempotency.stored(rows)
            if key in found:
                first = idempotency.first_outcome(found[key], fingerprint)
                shown = _with_secret(conn, services, first["body"])
                return json(shown, int(first["status"]), replayed=True)
        status, body = make(conn)
        if key is not None:
            outcome = {"status": status, "body": _without_secret(body)}
            conn.execute(idempotency.STORE, idempotency.store_params([(key, fingerprint, outcome)]))
    return json(body, status)


def _without_secret(body: dict[str, Any]) -> dict[str, Any]:
    """An answer as its key keeps it: a secret's SHA-256 in place of the secret."""
    return {
        ("secret_sha256" if name == "secret" else name): (
            signing.sha256(value) if name == "secret" else value
        )
        for name, value in body.items()
    }


def _with_secret(conn: Connection, services: Services, body: dict[str, Any]) -> dict[str, Any]:
    """A kept answer as it is shown again: with the endpoint's secret (or the
    previous one, while it signs) whose hash it kept; null if none of them
    signs now. (An answer kept before hashes were has `"secret": null`.)"""
    if "secret_sha256" not in body:
        return body
    row = one(conn, endpoints_table.SECRETS, (body["id"],))
    secret = None
    if row is not None:
        signing_now = [row["secret"]]
        until = row["previous_secret_until"]
        if row["previous_secret"] is not None and until is not None and until > services.clock():
            signing_now.append(row["previous_secret"])
        secret = next((s for s in signing_now if signing.sha256(s) == body["secret_sha256"]), None)
    return {
        ("secret" if name == "secret_sha256" else name): (
            secret if name == "secret_sha256" else value
        )
        for name, value in body.items()
    }
