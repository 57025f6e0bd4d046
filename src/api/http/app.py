"""The FastAPI application: its routers, its edge, its problems, its document."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import console
from api.bootstrap import Services, build_services, resolve_database
from api.collector import tune_garbage_collector
from api.http import openapi, problems
from api.http.direct import DirectRoutes
from api.http.middleware import Edge
from api.http.routers import (
    events,
    grants,
    health,
    holds,
    projections,
    stripe,
    trust,
    users,
    webhooks,
)
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


#: Every router, in the order their routes are matched.
ROUTERS = (users, holds, grants, trust, events, projections, stripe, webhooks, health)


def create_app(services: Services) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tune_garbage_collector(services.settings.gc_threshold)
        await services.start()
        try:
            yield
        finally:
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
    for module in ROUTERS:
        app.include_router(module.router)
    app.include_router(console.router)  # at paths of its own, outside /v1/
    direct = (
        DirectRoutes.of([m.router for m in ROUTERS]) if services.settings.direct_routes else None
    )
    app.add_middleware(Edge, keyring=services.keyring, direct=direct)
    openapi.document(app)
    return app


def app_from_env() -> FastAPI:
    """For `uvicorn --factory` in each worker process: settings from LEDGER_*."""
    settings = Settings()
    return create_app(build_services(settings, resolve_database(settings)))
