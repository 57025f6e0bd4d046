"""Consistency as a client sees it: reading one's own writes, and a balance that
concurrent spends cannot overdraw, the same in every view of it."""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from tests.e2e.conftest import Api


@pytest.mark.parametrize(
    ("method", "route", "body", "status", "field", "value"),
    [
        ("POST", "/credits/spends", {"amount": 4}, 201, "free_credits", 6),
        ("POST", "/credits/grants", {"amount": 4}, 201, "free_credits", 14),
        ("POST", "/chat-messages/spends", {"amount": 4}, 201, "free_chat_messages", 16),
        ("POST", "/chat-messages/grants", {"amount": 4}, 201, "free_chat_messages", 24),
        ("PUT", "/plan", {"level": "paid", "renewal_period": "lifetime"}, 200, "level", "paid"),
    ],
)
def test_a_command_position_as_min_position_reads_the_command_back(
    api: Api, method: str, route: str, body: dict[str, Any], status: int, field: str, value: Any
) -> None:
    user_id = api.registered()
    answer = api.check_command(
        api.request(method, f"/v1/users/{user_id}{route}", json=body), status
    )

    started = time.monotonic()
    response = api.get(f"/v1/users/{user_id}", params={"min_position": answer["event"]["position"]})
    waited = time.monotonic() - started

    user = api.check_user(api.json(response))
    assert user[field] == value
    assert user == answer["user"]
    assert waited < 1.0


def test_a_new_user_can_be_read_at_once_with_min_position(api: Api) -> None:
    registered = api.register()

    response = api.get(
        f"/v1/users/{registered['user']['id']}",
        params={"min_position": registered["event"]["position"]},
    )

    assert api.json(response) == registered["user"]


def test_reading_ones_own_writes_is_quick_every_time(api: Api) -> None:
    user_id = api.registered()
    waits = []

    for expected in range(9, -1, -1):
        spent = api.check_command(api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 1}))
        started = time.monotonic()
        user = api.json(
            api.get(f"/v1/users/{user_id}", params={"min_position": spent["event"]["position"]})
        )
        waits.append(time.monotonic() - started)
        assert user["free_credits"] == expected

    assert max(waits) < 1.0, waits
    assert statistics.median(waits) < 0.25, waits


def test_forty_concurrent_spends_of_ten_credits_give_ten_successes(api: Api) -> None:
    user_id = api.registered("hot")
    start = threading.Barrier(40)

    def spend(_: int) -> httpx.Response:
        start.wait()
        return api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 1}, role="service")

    with api.records(10), ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(spend, range(40)))

    accepted = [api.check_command(a) for a in answers if a.status_code == 201]
    refused = [a for a in answers if a.status_code != 201]
    assert (len(accepted), len(refused)) == (10, 30)
    for answer in refused:
        api.problem(answer, 409, "insufficient-balance")
    assert sorted(a["user"]["free_credits"] for a in accepted) == list(range(10))
    last = max(a["event"]["position"] for a in accepted)

    projected = api.user(user_id, at_least=last)
    replayed = api.json(api.get(f"/v1/users/{user_id}/state"))
    history = api.json(api.get(f"/v1/users/{user_id}/events"))
    audit = api.json(api.get(f"/v1/audit/users/{user_id}"))

    assert projected["free_credits"] == replayed["free_credits"] == 0
    assert projected == replayed
    assert [item["type"] for item in history["items"]] == ["UserRegistered"] + ["CreditsSpent"] * 10
    assert history["items"][-1]["user"]["free_credits"] == 0
    assert audit["consistent"] is True
    assert audit["projected"] == audit["replayed"] == projected
