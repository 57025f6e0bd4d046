"""A user's history that holds an event this release cannot read or apply (one
recorded by a newer release during a rolling deploy, say): every route that
would replay it answers 503 `history-unreadable`, naming the event, and never a
500; other users, and the part of the history before it, are served as ever."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from tests.e2e.conftest import Api
from tests.helpers import head, record_unreadable_event, wait_caught_up

#: Each user's second event, and how the answer names it.
UNREADABLE = {
    # A type this release does not know.
    "newer": (
        {},
        "'newer''s event 2 (ledger.domain:User.CreditsExpired) cannot be read by this release",
    ),
    # A known type in a shape it does not know.
    "reshaped": (
        {"event_type": "CreditsGranted", "quantity": 5, "reason": None},
        "'reshaped''s event 2 (ledger.domain:User.CreditsGranted) cannot be read by this "
        "release: it has no amount",
    ),
    # A known type, past this release's bounds.
    "beyond": (
        {"event_type": "CreditsGranted", "amount": 2**40, "reason": None},
        "'beyond''s event 2 (ledger.domain:User.CreditsGranted) cannot be applied by this release",
    ),
}


@pytest.fixture(scope="module")
def api(serve_ledger: Callable[..., AbstractContextManager[Api]]) -> Iterator[Api]:
    with serve_ledger() as served:
        for user_id in UNREADABLE:
            served.register(user_id)
        served.register("older")
        wait_caught_up(served.database)
        for user_id, (fields, _) in UNREADABLE.items():
            record_unreadable_event(served.database, user_id, 2, **fields)
        yield served


@pytest.mark.parametrize("user_id", list(UNREADABLE))
@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("GET", "/v1/users/{id}/events", "reader"),
        ("GET", "/v1/users/{id}/state", "reader"),
        ("GET", "/v1/users/{id}/state?at=2100-01-01T00:00:00Z", "reader"),
        ("POST", "/v1/users/{id}/credits/spends", "service"),
    ],
)
def test_a_route_that_would_replay_it_answers_503_naming_the_event(
    api: Api, method: str, path: str, role: str, user_id: str
) -> None:
    body = {"amount": 1} if method == "POST" else None
    response = api.request(method, path.format(id=user_id), role=role, json=body)

    problem = api.problem(response, 503, "history-unreadable")
    assert UNREADABLE[user_id][1] in problem["detail"]


def test_the_event_log_stops_at_the_first_with_503(api: Api) -> None:
    response = api.get("/v1/events?after=0", role="admin")

    problem = api.problem(response, 503, "history-unreadable")
    assert UNREADABLE["newer"][1] in problem["detail"]


@pytest.mark.parametrize("user_id", list(UNREADABLE))
def test_the_state_as_of_a_time_before_it_is_served(api: Api, user_id: str) -> None:
    registered = api.json(api.get(f"/v1/users/{user_id}/state?version=1", role="reader"))

    then = api.get(
        f"/v1/users/{user_id}/state", params={"at": registered["updated_at"]}, role="reader"
    )

    assert api.json(then) == registered


def test_what_comes_before_it_and_other_users_are_served(api: Api) -> None:
    before = api.json(api.get("/v1/users/newer/state?version=1", role="reader"))
    projected = api.json(api.get("/v1/users/newer", role="reader"))
    others = api.json(api.get("/v1/users/older/events", role="reader"))
    spent = api.check_command(api.post("/v1/users/older/credits/spends", {"amount": 1}))
    audit = api.json(api.get("/v1/audit/users/newer", role="reader"))
    page = api.json(api.get("/v1/users/newer/events?limit=1", role="reader"))
    first = api.json(api.get(f"/v1/events?after=0&limit={len(UNREADABLE) + 1}", role="admin"))
    after = api.json(api.get(f"/v1/events?after={head(api.database) - 1}", role="admin"))

    assert before["version"] == 1 and before["free_credits"] == 10
    assert projected["version"] == 1
    assert [item["type"] for item in others["items"]] == ["UserRegistered"]
    assert spent["user"]["free_credits"] == 9
    # The audit compares at the projection's position, which stopped before it.
    assert audit["consistent"] is True and audit["replayed"]["version"] == 1
    # A page that ends before it is served, and says more follows.
    assert [item["version"] for item in page["items"]] == [1] and page["next"] == 1
    assert [item["user_id"] for item in first["items"]] == [*UNREADABLE, "older"]
    assert first["next"] == len(UNREADABLE) + 1
    assert [item["user_id"] for item in after["items"]] == ["older"]
