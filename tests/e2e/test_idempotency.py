"""Idempotency-Key: a retry gets the first answer again and records nothing; the
same key for another request is refused; keys belong to the API key that sent them."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.helpers import rows, wait_until

if TYPE_CHECKING:
    from tests.e2e.conftest import Api


def new_key() -> str:
    return f"key-{uuid.uuid4()}"


def test_a_retry_returns_the_first_response_byte_for_byte_and_records_nothing(api: Api) -> None:
    user_id = api.registered()
    key = new_key()
    body = {"amount": 3, "reason": "café ☕ retry"}

    with api.records(1):
        first = api.post(f"/v1/users/{user_id}/credits/spends", body, key=key)
        second = api.post(f"/v1/users/{user_id}/credits/spends", body, key=key)
        third = api.post(f"/v1/users/{user_id}/credits/spends", body, key=key)

    answer = api.check_command(first)
    assert "idempotent-replayed" not in first.headers
    assert second.status_code == third.status_code == 201
    assert second.content == third.content == first.content
    assert second.headers["idempotent-replayed"] == third.headers["idempotent-replayed"] == "true"
    assert answer["event"]["data"]["reason"] == "café ☕ retry"
    assert api.current(user_id)["free_credits"] == 7


@pytest.mark.parametrize(
    ("method", "route", "body", "status"),
    [
        ("POST", "", None, 201),
        ("POST", "/{id}/credits/grants", {"amount": 2}, 201),
        ("POST", "/{id}/chat-messages/grants", {"amount": 2, "reason": "gift"}, 201),
        ("POST", "/{id}/chat-messages/spends", {"amount": 2}, 201),
        ("PUT", "/{id}/plan", {"level": "paid", "renewal_period": "lifetime"}, 200),
    ],
)
def test_every_command_replays_its_first_answer(
    api: Api, method: str, route: str, body: dict[str, Any] | None, status: int
) -> None:
    if route:
        user_id = api.registered()
    else:  # a registration retried: the first 201, not 409 user-exists
        user_id = api.new_id()
        body = {"id": user_id}
    key = new_key()
    path = "/v1/users" + route.format(id=user_id)

    with api.records(1):
        first = api.request(method, path, json=body, key=key)
        retry = api.request(method, path, json=body, key=key)

    api.check_command(first, status)
    assert retry.status_code == status
    assert retry.content == first.content
    assert retry.headers["idempotent-replayed"] == "true"


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/{id}/credits/spends", {"amount": 2}),
        ("/{id}/credits/spends", {"amount": 1, "reason": "another reason"}),
        ("/{other}/credits/spends", {"amount": 1}),
        ("/{id}/chat-messages/spends", {"amount": 1}),
        ("/{id}/credits/grants", {"amount": 1}),
        ("", {"id": "{other}"}),
    ],
    ids=["other-amount", "other-reason", "other-user", "other-balance", "grant", "register"],
)
def test_the_same_key_for_another_request_is_refused(
    api: Api, route: str, body: dict[str, Any]
) -> None:
    user_id, other = api.registered(), api.new_id()
    key = new_key()
    api.check_command(api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 1}, key=key))
    body = {k: v.format(other=other) if isinstance(v, str) else v for k, v in body.items()}

    with api.records_nothing():
        response = api.post("/v1/users" + route.format(id=user_id, other=other), body, key=key)

    api.problem(response, 422, "idempotency-key-reused")
    assert api.current(user_id)["free_credits"] == 9


def test_a_refused_command_is_replayed_as_refused(api: Api) -> None:
    user_id = api.registered()
    key = new_key()
    refused = api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 12}, key=key)
    api.check_command(api.post(f"/v1/users/{user_id}/credits/grants", {"amount": 5}))

    with api.records_nothing():
        retry = api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 12}, key=key)
    fresh = api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 12}, key=new_key())

    api.problem(refused, 409, "insufficient-balance")
    assert api.problem(retry, 409, "insufficient-balance") == refused.json()
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in refused.headers
    assert api.check_command(fresh)["user"]["free_credits"] == 3


def test_a_request_refused_as_invalid_does_not_use_up_its_key(api: Api) -> None:
    user_id = api.registered()
    key = new_key()

    with api.records_nothing():
        invalid = api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 0}, key=key)
    with api.records(1):
        corrected = api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 1}, key=key)

    api.problem(invalid, 422, "validation-error")
    assert api.check_command(corrected)["user"]["free_credits"] == 9
    assert "idempotent-replayed" not in corrected.headers


def test_twenty_concurrent_requests_with_one_key_record_one_event(api: Api) -> None:
    user_id = api.registered()
    key = new_key()
    start = threading.Barrier(20)

    def spend(_: int) -> httpx.Response:
        start.wait()
        return api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 1}, key=key)

    with api.records(1), ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(spend, range(20)))

    accepted = [a for a in answers if a.status_code == 201]
    in_use = [a for a in answers if a.status_code == 409]
    assert len(accepted) + len(in_use) == 20
    assert accepted, "no request was answered with the command's event"
    first = api.check_command(accepted[0])
    assert all(a.json() == first for a in accepted)
    assert sum("idempotent-replayed" not in a.headers for a in accepted) == 1
    for answer in in_use:
        api.problem(answer, 409, "idempotency-key-in-use")
    assert first["user"]["free_credits"] == 9
    assert api.current(user_id)["free_credits"] == 9


def test_a_retry_while_the_first_request_is_running_is_a_conflict(api: Api) -> None:
    user_id = api.registered()
    key = new_key()
    path = f"/v1/users/{user_id}/credits/spends"
    answers: dict[str, httpx.Response] = {}

    # Hold the writer's table lock, so that the first request waits in the writer.
    with api.database.connect(autocommit=False) as lock:
        lock.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
        first = threading.Thread(
            target=lambda: answers.setdefault("first", api.post(path, {"amount": 1}, key=key))
        )
        first.start()
        wait_until(lambda: writer_is_waiting(api), timeout=10)

        retry = api.post(path, {"amount": 1}, key=key, timeout=5)

        lock.rollback()
    first.join(30)
    later = api.post(path, {"amount": 1}, key=key)

    api.problem(retry, 409, "idempotency-key-in-use")
    assert api.check_command(answers["first"])["user"]["free_credits"] == 9
    assert later.content == answers["first"].content
    assert later.headers["idempotent-replayed"] == "true"
    assert api.current(user_id)["free_credits"] == 9


def writer_is_waiting(api: Api) -> bool:
    """Some session of the ledger's database waits for the events table lock."""
    return bool(
        rows(
            api.database,
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query ILIKE '%%LOCK TABLE%%'",
        )
    )


def test_the_same_request_and_key_from_two_api_keys_are_two_requests(api: Api) -> None:
    user_id = api.registered()
    key = new_key()
    path = f"/v1/users/{user_id}/credits/spends"

    with api.records(2):
        admin = api.post(path, {"amount": 1}, key=key, role="admin")
        service = api.post(path, {"amount": 1}, key=key, role="service")
        service_again = api.post(path, {"amount": 1}, key=key, role="service")
        admin_again = api.post(path, {"amount": 1}, key=key, role="admin")

    first, second = api.check_command(admin), api.check_command(service)
    assert first["event"]["id"] != second["event"]["id"]
    assert "idempotent-replayed" not in service.headers
    assert second["event"]["metadata"]["actor_role"] == "service"
    assert service_again.content == service.content
    assert admin_again.content == admin.content
    assert api.current(user_id)["free_credits"] == 8


def test_a_key_used_by_another_api_key_is_not_a_reuse(api: Api) -> None:
    user_id = api.registered()
    key = new_key()
    path = f"/v1/users/{user_id}/credits/spends"

    with api.records(2):
        admin = api.post(path, {"amount": 1}, key=key, role="admin")
        service = api.post(path, {"amount": 2, "reason": "other"}, key=key, role="service")

    api.check_command(admin)
    assert api.check_command(service)["user"]["free_credits"] == 7
