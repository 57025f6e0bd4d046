"""Who may do what: every route, for a caller without a key, with an unknown key,
and with the key of each role. A role too weak gets 403, a missing or unknown
key 401, and neither records anything.

This module has a ledger of its own: the admin's call of the rebuild route
starts a real rebuild."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers import wait_until

if TYPE_CHECKING:
    from tests.e2e.conftest import Api

ROLES = ("admin", "service", "reader")
CALLERS = ("no-key", "unknown-key", *ROLES)
RANK = {"reader": 1, "service": 2, "admin": 3}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    needs: str | None  # the weakest role allowed; None: no key needed
    success: int
    body: Callable[[Api], Any] | None = None
    records: int = 0  # events recorded when it succeeds


ROUTES = {
    "register": Route(
        "POST", "/v1/users", "service", 201, lambda api: {"id": api.new_id("role")}, 1
    ),
    "grant-credits": Route(
        "POST", "/v1/users/{id}/credits/grants", "admin", 201, lambda _: {"amount": 1}, 1
    ),
    "spend-credits": Route(
        "POST", "/v1/users/{id}/credits/spends", "service", 201, lambda _: {"amount": 1}, 1
    ),
    "grant-chat-messages": Route(
        "POST", "/v1/users/{id}/chat-messages/grants", "admin", 201, lambda _: {"amount": 1}, 1
    ),
    "spend-chat-messages": Route(
        "POST", "/v1/users/{id}/chat-messages/spends", "service", 201, lambda _: {"amount": 1}, 1
    ),
    "change-plan": Route(
        "PUT",
        "/v1/users/{id}/plan",
        "admin",
        200,
        lambda _: {"level": "paid", "renewal_period": "lifetime"},
        1,
    ),
    "get-user": Route("GET", "/v1/users/{id}", "reader", 200),
    "user-history": Route("GET", "/v1/users/{id}/events", "reader", 200),
    "user-state-at-version": Route("GET", "/v1/users/{id}/state?version=1", "reader", 200),
    "all-events": Route("GET", "/v1/events", "admin", 200),
    "audit-user": Route("GET", "/v1/audit/users/{id}", "reader", 200),
    "projections": Route("GET", "/v1/projections", "reader", 200),
    "rebuild": Route("POST", "/v1/projections/users/rebuild", "admin", 202),
    "stripe-events": Route("GET", "/v1/stripe/events", "admin", 200),
    # Signed by Stripe, not keyed: anyone reaches it (here unconfigured, so 404).
    "stripe-webhook": Route("POST", "/v1/stripe/webhook", None, 404, lambda _: {}),
    "healthz": Route("GET", "/healthz", None, 200),
    "readyz": Route("GET", "/readyz", None, 200),
    "metrics": Route("GET", "/metrics", None, 200),
    "openapi": Route("GET", "/openapi.json", None, 200),
}


def expected_status(route: Route, caller: str) -> int:
    if route.needs is None:
        return route.success
    if caller not in RANK:
        return 401
    return route.success if RANK[caller] >= RANK[route.needs] else 403


OWN_LEDGER = True


@pytest.fixture(scope="module")
def user_id(api: Api) -> str:
    return api.registered("role")


def caller_headers(caller: str) -> tuple[str | None, dict[str, str]]:
    if caller == "no-key":
        return None, {}
    if caller == "unknown-key":
        return None, {"Authorization": "Bearer not-a-key-of-ours"}
    return caller, {}


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("name", list(ROUTES))
def test_every_caller_on_every_route(api: Api, user_id: str, name: str, caller: str) -> None:
    route = ROUTES[name]
    expected = expected_status(route, caller)
    role, headers = caller_headers(caller)
    body = route.body(api) if route.body else None
    recorded = route.records if expected == route.success else 0

    with api.records(recorded):
        response = api.request(
            route.method, route.path.format(id=user_id), role=role, headers=headers, json=body
        )

    if expected == 401:
        api.problem(response, 401, "unauthorized")
    elif expected == 403:
        problem = api.problem(response, 403, "forbidden")
        assert route.needs is not None and route.needs in problem["detail"]
    else:
        assert response.status_code == expected, response.text


@pytest.mark.parametrize(
    ("role", "method", "path", "body"),
    [
        ("reader", "POST", "/v1/users", {"id": "reader-cannot-register"}),
        ("reader", "POST", "/v1/users/{id}/credits/spends", {"amount": 1}),
        ("reader", "POST", "/v1/users/{id}/chat-messages/spends", {"amount": 1}),
        ("service", "POST", "/v1/users/{id}/credits/grants", {"amount": 1}),
        ("service", "POST", "/v1/users/{id}/chat-messages/grants", {"amount": 1}),
        ("service", "PUT", "/v1/users/{id}/plan", {"level": "paid", "renewal_period": "lifetime"}),
        ("service", "GET", "/v1/events", None),
        ("service", "POST", "/v1/projections/users/rebuild", None),
    ],
)
def test_a_role_too_weak_is_forbidden_and_changes_nothing(
    api: Api, user_id: str, role: str, method: str, path: str, body: Any
) -> None:
    before = api.current(user_id)
    wait_until(lambda: not api.projection()["rebuild_requested"])  # the admin's, if any

    with api.records_nothing():
        response = api.request(method, path.format(id=user_id), role=role, json=body)

    problem = api.problem(response, 403, "forbidden")
    assert role in problem["detail"]
    assert api.current(user_id) == before
    assert api.projection()["rebuild_requested"] is False
