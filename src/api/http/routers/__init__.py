"""One router module per resource."""

from __future__ import annotations

from typing import Any

from api.http.schemas import Problem

_DESCRIPTIONS = {
    400: "Bad request.",
    401: "Missing or unknown API key (`unauthorized`).",
    403: "The key's role cannot do this (`forbidden`).",
    404: "No such user (`user-not-found`).",
    409: "Refused: `insufficient-balance`, `balance-limit`, `user-exists` or "
    "`idempotency-key-in-use`.",
    413: "The body is over 64 KiB (`payload-too-large`).",
    422: "Invalid body, path, query or header (`validation-error`, `invalid-json`), "
    "or `idempotency-key-reused`.",
    503: "PostgreSQL cannot be reached (`database-unavailable`), or, just after an upgrade, "
    "this release's tables are still being built (`projection-rebuilding`); retry after "
    "Retry-After.",
    504: "The projection did not reach min_position within 5 s (`projection-timeout`).",
}


def problems(*statuses: int, **overrides: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem responses a route can give."""
    return {
        status: {
            "model": Problem,
            "description": overrides.get(f"d{status}", _DESCRIPTIONS[status]),
            "content": {"application/problem+json": {}},
        }
        for status in statuses
    }
