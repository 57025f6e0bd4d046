"""Dependencies, declared once as Annotated aliases."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated

import orjson
from fastapi import Depends, Header, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response

from api.auth import Principal, Role
from api.bootstrap import Services
from api.middleware import REQUEST_ID_KEY
from ledger.commands import Command
from ledger.domain import Cause
from ledger.errors import LedgerError
from ledger.idempotency import IdempotencyKey

IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def _authenticate(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if not header or scheme.lower() != "bearer" or not key.strip():
        raise HTTPException(
            401, "send an API key: Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"}
        )
    principal = get_services(request).keyring.identify(key.strip())
    if principal is None:
        raise HTTPException(401, "unknown API key", {"WWW-Authenticate": "Bearer"})
    return principal


def _require(role: Role) -> Callable[[Request], Principal]:
    def check(request: Request) -> Principal:
        principal = _authenticate(request)
        if principal.role < role:
            raise HTTPException(
                403, f"this needs the {role.name.lower()} role; the key is {principal.role_name}"
            )
        return principal

    return check


Reader = Annotated[Principal, Depends(_require(Role.READER))]
ServiceRole = Annotated[Principal, Depends(_require(Role.SERVICE))]
Admin = Annotated[Principal, Depends(_require(Role.ADMIN))]

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Up to 255 printable ASCII characters. A retry with the same key "
        "and the same request returns the first response and records nothing new.",
    ),
]


def request_id(request: Request) -> str:
    return str(request.scope.get(REQUEST_ID_KEY, ""))


RequestIdDep = Annotated[str, Depends(request_id)]


async def dispatch(
    services: Services,
    command: Command,
    principal: Principal,
    idempotency_key: str | None,
    request_id: str,
    status: int,
) -> Response:
    """Hand a command to the writer and answer with its event and user."""
    key = IdempotencyKey(principal.key_id, idempotency_key) if idempotency_key else None
    cause = Cause(principal.role_name, principal.key_id, request_id, idempotency_key)
    name = type(command).__name__
    metrics = services.metrics
    started = time.perf_counter()
    try:
        accepted = await asyncio.wrap_future(services.writer.submit(command, cause, key))
    except LedgerError as e:
        metrics.commands.labels(name, e.code).inc()
        raise
    finally:
        metrics.command_seconds.labels(name).observe(time.perf_counter() - started)
    metrics.commands.labels(name, "ok").inc()
    headers = {"Idempotent-Replayed": "true"} if accepted.replayed else None
    body = orjson.dumps({"event": accepted.event, "user": accepted.user})
    return Response(body, status, headers=headers, media_type="application/json")
