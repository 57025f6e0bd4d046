"""The FastAPI application."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from api import problems
from api.bootstrap import Services, build_services, resolve_database
from api.middleware import PROTECTED_PREFIX, Edge
from api.reads import Reads
from api.routers import events, health, projections, users
from api.settings import Settings

DESCRIPTION = """
An event-sourced credit ledger. Credit and chat-message grants and spends, and
plan changes, are immutable events in PostgreSQL; the `users` table is a
projection of them.

**Auth**: `Authorization: Bearer <key>`. Roles: `admin` (everything), `service`
(registrations, spends and reads), `reader` (reads).

**Idempotency**: every POST and PUT takes an `Idempotency-Key` header. A retry
with the same key and the same request returns the first response (with
`Idempotent-Replayed: true`) and records nothing new.

**Errors** are `application/problem+json` (RFC 9457), with `type`, `title`,
`status` and `detail`.
"""


def create_app(services: Services) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _tune_garbage_collector(services.settings.gc_threshold)
        await services.start()
        reads = Reads(services.database, services.projection.name, services.settings.pool_size)
        await reads.open()
        app.state.reads = reads
        try:
            yield
        finally:
            await reads.close()
            await services.stop()

    app = FastAPI(
        title="Credit ledger",
        version="1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        redirect_slashes=False,
    )
    app.state.services = services
    problems.install(app)
    for module in (users, events, projections, health):
        app.include_router(module.router)
    app.add_middleware(Edge, keyring=services.keyring)
    _document_bearer_keys(app)
    return app


def _document_bearer_keys(app: FastAPI) -> None:
    """The key is checked at the edge, not by a FastAPI dependency; say so in
    the OpenAPI, so that /docs offers to send one."""
    default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key."}
            }
            for path, operations in schema.get("paths", {}).items():
                if path.startswith(PROTECTED_PREFIX):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
            _link_commands(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


#: Where a command's answer leads (OpenAPI links): every route about the same
#: user, the read-your-writes wait at the event's position, and the state at
#: the user's version.
_USER_PREFIX = "/v1/users/{user_id}"
_FROM_ANSWER = {
    "user_id": "$response.body#/user/id",
    "min_position": "$response.body#/event/position",
    "version": "$response.body#/user/version",
}


def _link_commands(schema: dict[str, Any]) -> None:
    """Document, as OpenAPI links, how the answer of a command on a user leads
    to the other routes about that user (what a client does next, and what a
    stateful test of the API follows)."""
    targets: list[tuple[str, dict[str, Any]]] = []
    for path, operations in schema.get("paths", {}).items():
        if path.startswith(_USER_PREFIX):
            for operation in operations.values():
                names = {p["name"] for p in operation.get("parameters", [])}
                targets.append(
                    (
                        operation["operationId"],
                        {n: _FROM_ANSWER[n] for n in names if n in _FROM_ANSWER},
                    )
                )
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                ref = response.get("content", {}).get("application/json", {}).get("schema", {})
                if status.startswith("2") and ref.get("$ref", "").endswith("/CommandOut"):
                    response["links"] = {
                        target: {"operationId": target, "parameters": parameters}
                        for target, parameters in targets
                    }


def _tune_garbage_collector(threshold: int) -> None:
    """Every request allocates thousands of short-lived objects; with CPython's
    default threshold (700) the collector runs every few requests and shows in
    the tail latency. Objects made at start-up never die: freeze them out of
    its way. https://docs.python.org/3/library/gc.html#gc.freeze"""
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, 20, 100)


def app_from_env() -> FastAPI:
    """For `uvicorn --factory` in each worker process: settings from LEDGER_*."""
    settings = Settings()
    return create_app(build_services(settings, resolve_database(settings)))
