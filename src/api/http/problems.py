"""Every failure as RFC 9457 problem details, mapped in one place."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from ledger import errors
from ledger.db import cannot_reach

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
RETRY_AFTER_SECONDS = "1"

# status, title
_LEDGER_ERRORS: dict[type[errors.LedgerError], tuple[int, str]] = {
    errors.InvalidCommand: (422, "Invalid command"),
    errors.UserNotFound: (404, "User not found"),
    errors.UserExists: (409, "User exists"),
    errors.InsufficientBalance: (409, "Insufficient balance"),
    errors.BalanceLimit: (409, "Balance limit"),
    errors.HoldNotFound: (404, "Hold not found"),
    errors.HoldClosed: (409, "Hold closed"),
    errors.HoldHasExpired: (409, "Hold expired"),
    errors.SettleExceedsHold: (409, "Settle exceeds hold"),
    errors.HoldExists: (409, "Hold exists"),
    errors.IdempotencyKeyReused: (422, "Idempotency key reused"),
    errors.IdempotencyKeyInUse: (409, "Idempotency key in use"),
    errors.DatabaseUnavailable: (503, "Database unavailable"),
    errors.HistoryUnreadable: (503, "History unreadable"),
}

_HTTP_TYPES: dict[int, tuple[str, str]] = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation-error", "Invalid request"),
    504: ("projection-timeout", "Projection timeout"),
}


def problem(
    status: int,
    type_: str,
    title: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    facts: dict[str, Any] | None = None,
    **extra: Any,
) -> Response:
    """A problem; `extra` members are left out when None, `facts` never."""
    body: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail}
    body.update({k: v for k, v in extra.items() if v is not None})
    body.update(facts or {})
    return Response(orjson.dumps(body), status, headers=headers, media_type=MEDIA_TYPE)


def problem_bytes(status: int, type_: str, title: str, detail: str) -> bytes:
    return orjson.dumps({"type": type_, "title": title, "status": status, "detail": detail})


def ledger_problem(error: errors.LedgerError) -> Response:
    status, title = _LEDGER_ERRORS.get(type(error), (500, "Internal error"))
    headers: dict[str, str] = {}
    if status == 503:
        headers["Retry-After"] = RETRY_AFTER_SECONDS
    if error.replayed:
        headers["Idempotent-Replayed"] = "true"
    return problem(
        status, error.code, title, error.detail, headers=headers or None, facts=error.facts
    )


def http_problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    type_, title = _HTTP_TYPES.get(status, ("http-error", "HTTP error"))
    return problem(status, type_, title, detail, headers=headers)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors()
    ]


def _summary(errors_: list[dict[str, Any]]) -> str:
    parts = []
    for e in errors_[:5]:
        where = ".".join(str(p) for p in e["loc"] if p != "body") or "body"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts) or "the request is invalid"


async def _on_ledger_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.LedgerError)
    return ledger_problem(exc)


async def _on_validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    found = _validation_errors(exc)
    if any(e["type"] == "json_invalid" for e in found):
        return problem(
            422, "invalid-json", "Malformed JSON", "the body is not valid JSON", errors=found
        )
    return problem(422, "validation-error", "Invalid request", _summary(found), errors=found)


async def _on_http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400:
        # FastAPI's answer to a body it could not decode at all (invalid
        # UTF-8, nesting too deep): malformed JSON, as far as a client cares.
        return problem(422, "invalid-json", "Malformed JSON", "the body could not be decoded")
    return http_problem(exc.status_code, str(exc.detail), dict(exc.headers or {}) or None)


async def _on_database_error(_: Request, exc: Exception) -> Response:
    log.warning("database unavailable: %s", exc)
    return ledger_problem(cannot_reach(exc))


async def _on_table_not_yet(_: Request, exc: Exception) -> Response:
    # A table, or a column, of this release that the database does not
    # have yet: the rebuild after an upgrade is still making it.
    log.warning("the projection is being rebuilt: %s", exc)
    return problem(
        503,
        "projection-rebuilding",
        "Projection rebuilding",
        "this release's tables are still being built from the history; retry shortly",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


async def _on_unexpected(_: Request, exc: Exception) -> Response:
    log.error("unexpected error", exc_info=exc)
    return problem(500, "internal-error", "Internal error", "an unexpected error occurred")


Handler = Callable[[Request, Exception], Awaitable[Response]]

#: Each failure's answer, by the class of the exception (the nearest in its MRO).
_HANDLERS: dict[type[Exception], Handler] = {
    errors.LedgerError: _on_ledger_error,
    RequestValidationError: _on_validation_error,
    HTTPException: _on_http_error,
    psycopg.OperationalError: _on_database_error,
    psycopg.InterfaceError: _on_database_error,
    psycopg.errors.UndefinedTable: _on_table_not_yet,
    psycopg.errors.UndefinedColumn: _on_table_not_yet,
    Exception: _on_unexpected,
}


async def answer(request: Request, exc: Exception) -> Response:
    """The problem for an exception a route raised, as the app's handlers give it
    (for the routes api.http.direct calls itself)."""
    for cls in type(exc).__mro__:
        handler = _HANDLERS.get(cls)
        if handler is not None:
            return await handler(request, exc)
    return await _on_unexpected(request, exc)


def install(app: FastAPI) -> None:
    """Every failure as problem+json. (A key whose role is too weak for a route
    is refused before its body is read: api.deps.RoleCheckedRoute.)"""
    for cls, handler in _HANDLERS.items():
        app.add_exception_handler(cls, handler)
