"""Dependencies, declared once as Annotated aliases.

The API key is checked at the edge (api.middleware.Edge), before anything reads
the body: a request without a known key gets 401 whatever else is wrong with
it. Each route then has one dependency: it checks the key's role, and hands the
route what it needs. Dependencies are coroutines, because FastAPI runs plain
functions on a thread pool, and one thread hop per dependency costs more than
the work they do.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.responses import Response

from api.bootstrap import Services
from api.http.middleware import PRINCIPAL_KEY, REQUEST_ID_KEY
from api.http.problems import http_problem
from api.keys import Principal, Role
from ledger.commands import Command
from ledger.domain import Cause
from ledger.errors import LedgerError
from ledger.idempotency import IdempotencyKey

IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)

#: How the Idempotency-Key header appears in the OpenAPI of each command.
IDEMPOTENCY_KEY_DOC: dict[str, Any] = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN, "maxLength": 255},
            "description": "Up to 255 printable ASCII characters, without spaces. A retry "
            "with the same key and the same request returns the first response (with "
            "`Idempotent-Replayed: true`) and records nothing new; the same key with another "
            "request is refused (422).",
        }
    ]
}


def _authorize(request: Request, role: Role) -> tuple[Services, Principal]:
    services: Services = request.app.state.services
    principal: Principal | None = request.scope.get(PRINCIPAL_KEY)
    if principal is None:  # only if a route outside /v1/ asked for a role
        raise HTTPException(401, "send an API key", {"WWW-Authenticate": "Bearer"})
    if principal.role < role:
        raise HTTPException(403, _too_weak(role, principal))
    return services, principal


def _too_weak(role: Role, principal: Principal) -> str:
    return f"this needs the {role.name.lower()} role; the key is {principal.role_name}"


def _access(role: Role) -> Callable[[Request], Awaitable[Services]]:
    async def access(request: Request) -> Services:
        services, _ = _authorize(request, role)
        return services

    access.required_role = role  # type: ignore[attr-defined]
    return access


@dataclass(frozen=True, slots=True)
class CommandContext:
    """Who sent a command, and how to answer it."""

    services: Services
    principal: Principal
    request_id: str
    key: IdempotencyKey | None

    async def run(self, command: Command, status: int) -> Response:
        """Hand the command to the writer; answer with its event and user."""
        principal, key = self.principal, self.key
        header = key.key if key is not None else None
        cause = Cause(principal.role_name, principal.key_id, self.request_id, header)
        name = type(command).__name__
        metrics = self.services.metrics
        started = time.perf_counter()
        try:
            accepted = await self.services.writer.submit(command, cause, key)
        except LedgerError as e:
            metrics.counted(name, e.code)
            raise
        finally:
            metrics.timed(name, time.perf_counter() - started)
        metrics.counted(name, "ok")
        headers = {"Idempotent-Replayed": "true"} if accepted.replayed else None
        return Response(
            orjson.dumps(accepted.body), status, headers=headers, media_type="application/json"
        )

    @property
    def scope(self) -> str | None:
        """What names this request across retries (its API key and its
        Idempotency-Key), if it has a key."""
        return None if self.key is None else f"{self.key.principal}/{self.key.key}"


def _command(role: Role, *, body: bool = True) -> Callable[[Request], Awaitable[CommandContext]]:
    """A command's context; `body=False` for a command whose body may be
    absent (then it needs no Content-Type)."""

    async def context(request: Request) -> CommandContext:
        services, principal = _authorize(request, role)
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        bodiless = (
            not body
            and request.headers.get("content-length", "0") == "0"
            and "transfer-encoding" not in request.headers
        )
        if not bodiless and media_type != "application/json" and not media_type.endswith("+json"):
            raise HTTPException(422, "send the body as JSON, with Content-Type: application/json")
        request_id = str(request.scope.get(REQUEST_ID_KEY, ""))
        return CommandContext(services, principal, request_id, _idempotency_key(request, principal))

    context.required_role = role  # type: ignore[attr-defined]
    return context


def _idempotency_key(request: Request, principal: Principal) -> IdempotencyKey | None:
    """The request's Idempotency-Key, scoped to the API key that sent it."""
    header = request.headers.get("idempotency-key")
    if header is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(header):
        raise HTTPException(
            422, "Idempotency-Key must be 1 to 255 printable ASCII characters, without spaces"
        )
    return IdempotencyKey(principal.key_id, header)


@dataclass(frozen=True, slots=True)
class KeyedRequest:
    """A request with no command body that still takes an Idempotency-Key."""

    services: Services
    key: IdempotencyKey | None


def _keyed(role: Role) -> Callable[[Request], Awaitable[KeyedRequest]]:
    async def keyed(request: Request) -> KeyedRequest:
        services, principal = _authorize(request, role)
        return KeyedRequest(services, _idempotency_key(request, principal))

    keyed.required_role = role  # type: ignore[attr-defined]
    return keyed


class RoleCheckedRoute(APIRoute):
    """A route that refuses a key whose role is too weak before the body is
    read: FastAPI decodes a JSON body before it runs any dependency, and a
    caller who may not use the route must hear 403, not what is wrong with the
    body. (The route's dependency checks the role again, and hands it what it
    needs.)"""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        roles = [getattr(d.call, "required_role", None) for d in self.dependant.dependencies]
        required: Role | None = max((r for r in roles if r is not None), default=None)
        if required is None:
            return handler

        async def checked(request: Request) -> Response:
            principal: Principal | None = request.scope.get(PRINCIPAL_KEY)
            if principal is not None and principal.role < required:
                return http_problem(403, _too_weak(required, principal))
            return await handler(request)

        return checked


ReaderAccess = Annotated[Services, Depends(_access(Role.READER))]
AdminAccess = Annotated[Services, Depends(_access(Role.ADMIN))]
ServiceCommand = Annotated[CommandContext, Depends(_command(Role.SERVICE))]
#: A service command whose body is optional (a hold's release).
ServiceCommandMaybeBody = Annotated[CommandContext, Depends(_command(Role.SERVICE, body=False))]
AdminCommand = Annotated[CommandContext, Depends(_command(Role.ADMIN))]
#: An admin command whose body may be absent (a DELETE).
AdminCommandMaybeBody = Annotated[CommandContext, Depends(_command(Role.ADMIN, body=False))]
AdminKeyed = Annotated[KeyedRequest, Depends(_keyed(Role.ADMIN))]


async def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


#: For the routes that need no key: health, readiness, metrics.
OpenServices = Annotated[Services, Depends(_services)]
