"""Which requests the edge serves itself (api.http.direct), and which it leaves
to FastAPI: the app in-process, over ASGI, on a real database, with every
request that reaches FastAPI counted by the route FastAPI picked for it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from api.bootstrap import build_services, init_database
from api.http.app import ROUTERS, create_app
from api.http.direct import DirectRoutes
from api.settings import Settings
from ledger.db import Database
from tests.helpers import API_KEYS

#: Every route of the hot path: commands and the reads an AI app makes per reply.
DIRECT = {
    ("POST", "/v1/users"),
    ("POST", "/v1/users/{user_id}/credits/spends"),
    ("POST", "/v1/users/{user_id}/chat-messages/spends"),
    ("POST", "/v1/users/{user_id}/credits/grants"),
    ("POST", "/v1/users/{user_id}/chat-messages/grants"),
    ("PUT", "/v1/users/{user_id}/plan"),
    ("GET", "/v1/users/{user_id}"),
    ("POST", "/v1/users/{user_id}/credits/holds"),
    ("POST", "/v1/users/{user_id}/chat-messages/holds"),
    ("POST", "/v1/users/{user_id}/holds/{hold_id}/settle"),
    ("POST", "/v1/users/{user_id}/holds/{hold_id}/release"),
    ("GET", "/v1/users/{user_id}/holds"),
    ("GET", "/v1/users/{user_id}/holds/{hold_id}"),
    ("GET", "/healthz"),
}

DIRECT_ROUTES = DirectRoutes.of([module.router for module in ROUTERS])


class Reached:
    """The innermost middleware: each request that reached FastAPI, by the
    path of the route FastAPI picked (None: none matched); and, beside it,
    the route api.http.direct finds for the same request."""

    calls: dict[str | None, int]
    picked: list[tuple[str | None, str | None]]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = DIRECT_ROUTES.find(dict(scope))
        await self.app(scope, receive, send)
        route = scope.get("route")
        path = getattr(route, "path", None)
        Reached.calls[path] = Reached.calls.get(path, 0) + 1
        Reached.picked.append((path, found[0].route.path if found else None))


def _scenario(database: Database, body: Callable[[Any], Awaitable[None]], **settings: Any) -> None:
    init_database(database)
    keys = ",".join(f"{role}:{key}" for role, key in API_KEYS.items())
    services = build_services(
        Settings(database_url=database.url, api_keys=keys, **settings), database
    )
    app = create_app(services)
    app.user_middleware.append(Middleware(Reached))  # innermost
    Reached.calls, Reached.picked = {}, []

    async def run() -> None:
        await services.start()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ledger") as client:

                async def call(method: str, path: str, role: str = "admin", **kw: Any) -> int:
                    headers = {"Authorization": f"Bearer {API_KEYS[role]}"}
                    response = await client.request(method, path, headers=headers, **kw)
                    return response.status_code

                await body(call)
        finally:
            await services.stop()

    # On a thread of its own: whatever loop the test's thread has (a browser
    # test's, say) stays out of it.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, run()).result()


def test_requests_in_order_never_reach_fastapi_and_the_rest_do(database: Database) -> None:
    spends = "/v1/users/u1/credits/spends"

    async def story(call: Any) -> None:
        assert await call("POST", "/v1/users", json={"id": "u1"}) == 201
        assert await call("POST", spends, "service", json={"amount": 1}) == 201
        assert await call("POST", spends, "service", json={"amount": 99}) == 409
        # (no projector here: the users table stays empty)
        assert await call("GET", "/v1/users/u1?min_position=0", "reader") == 404
        assert await call("GET", "/v1/users/u1/holds?limit=5", "reader") == 200
        assert await call("GET", "/healthz") == 200
        assert Reached.calls == {}, "requests in order went to FastAPI"

        assert await call("POST", spends, "service", json={"amount": 0}) == 422
        assert await call("POST", spends, "reader", json={"amount": 1}) == 403
        assert await call("GET", "/v1/users/u1?min_position=x", "reader") == 422
        assert await call("GET", "/v1/users/u1/events", "reader") == 200
        assert Reached.calls == {
            "/v1/users/{user_id}/credits/spends": 2,
            "/v1/users/{user_id}": 1,
            "/v1/users/{user_id}/events": 1,
        }

    _scenario(database, story)


def test_the_route_found_is_the_one_fastapi_picks(database: Database) -> None:
    requests = [
        ("POST", "/v1/users"),
        ("POST", "/v1/users/u1/credits/spends"),
        ("POST", "/v1/users/u1/chat-messages/holds"),
        ("POST", "/v1/users/u1/holds/h1/settle"),
        ("POST", "/v1/users/u1/holds/h1/release"),
        ("PUT", "/v1/users/u1/plan"),
        ("GET", "/v1/users/u1"),
        ("GET", "/v1/users/u1/holds"),
        ("GET", "/v1/users/u1/holds/h1"),
        ("GET", "/v1/users/u1/events"),
        ("GET", "/v1/users/u1/credits/spends"),
        ("PATCH", "/v1/users/u1"),
        ("GET", "/v1/users/u1/"),
        ("GET", "/openapi.json"),
        ("GET", "/healthz"),
    ]

    async def story(call: Any) -> None:
        for method, path in requests:
            await call(method, path, json={})
        assert len(Reached.picked) == len(requests)
        for (picked, found), request in zip(Reached.picked, requests, strict=True):
            if found is not None:
                assert found == picked, request
            else:  # a route left to FastAPI, none, or one of another method (405)
                assert (request[0], picked) not in DIRECT, request
        assert sum(found is not None for _, found in Reached.picked) >= 9

    _scenario(database, story, direct_routes=False)


def test_the_hot_routes_are_called_directly() -> None:
    found = {(m, e.route.path) for e in DIRECT_ROUTES.endpoints for m in e.route.methods}
    assert found >= DIRECT, DIRECT - found
    # Sync routes (history, audits, readiness) stay with FastAPI, which runs them on threads.
    assert ("GET", "/v1/users/{user_id}/events") not in found
