"""Holds over HTTP, as an AI app uses them: reserve before a reply, settle what
it cost, release a failed one, and let the clock run out on a forgotten one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers import MovableClock, wait_until

if TYPE_CHECKING:
    from tests.e2e.conftest import Api

HOLD_FIELDS = {
    "id",
    "user_id",
    "balance",
    "amount",
    "status",
    "reason",
    "created_at",
    "expires_at",
    "settled_amount",
    "closed_at",
}


@pytest.fixture(scope="module")
def clock(tmp_path_factory: pytest.TempPathFactory) -> MovableClock:
    return MovableClock(tmp_path_factory.mktemp("clock") / "offset")


@pytest.fixture(scope="module")
def api(
    serve_ledger: Callable[..., AbstractContextManager[Api]], clock: MovableClock
) -> Iterator[Api]:
    assert clock.path is not None
    with serve_ledger(LEDGER_CLOCK_OFFSET_FILE=str(clock.path)) as served:
        yield served


def place(api: Api, user_id: str, amount: int, **body: Any) -> dict[str, Any]:
    response = api.post(
        f"/v1/users/{user_id}/credits/holds", {"amount": amount, **body}, role="service"
    )
    answer = api.check_command(response, 201)
    assert set(answer["hold"]) == HOLD_FIELDS
    return answer


def test_a_reply_reserves_then_settles_what_it_cost(api: Api) -> None:
    user_id = api.registered("reply")

    placed = place(api, user_id, 5, reason="chat reply", ttl_seconds=120)
    hold = placed["hold"]
    assert (hold["status"], hold["amount"], hold["balance"]) == ("open", 5, "free_credits")
    assert placed["event"]["type"] == "HoldPlaced"
    assert placed["event"]["data"]["grants"][0]["amount"] == 5
    assert (placed["user"]["free_credits"], placed["user"]["free_credits_held"]) == (5, 5)

    settled = api.check_command(
        api.post(f"/v1/users/{user_id}/holds/{hold['id']}/settle", {"amount": 3}, role="service"),
        200,
    )

    assert settled["hold"]["status"] == "settled"
    assert settled["hold"]["settled_amount"] == 3
    assert settled["event"]["data"]["released"] == 2
    assert (settled["user"]["free_credits"], settled["user"]["free_credits_held"]) == (7, 0)
    read = api.user(user_id, at_least=settled["event"]["position"])
    assert (read["free_credits"], read["free_credits_held"]) == (7, 0)


def test_a_failed_reply_releases_its_hold_with_or_without_a_body(api: Api) -> None:
    user_id = api.registered("failed")
    first = place(api, user_id, 4)["hold"]["id"]
    second = place(api, user_id, 4)["hold"]["id"]

    with_body = api.post(f"/v1/users/{user_id}/holds/{first}/release", {}, role="service")
    without = api.request("POST", f"/v1/users/{user_id}/holds/{second}/release", role="service")

    assert api.check_command(with_body, 200)["hold"]["status"] == "released"
    assert api.check_command(without, 200)["user"]["free_credits"] == 10


def test_a_hold_resolves_once(api: Api) -> None:
    user_id = api.registered("once")
    hold_id = place(api, user_id, 5)["hold"]["id"]
    api.check_command(api.post(f"/v1/users/{user_id}/holds/{hold_id}/release"), 200)

    with api.records_nothing():
        again = api.post(f"/v1/users/{user_id}/holds/{hold_id}/settle", {"amount": 1})
        released_again = api.post(f"/v1/users/{user_id}/holds/{hold_id}/release")

    assert "released" in api.problem(again, 409, "hold-closed")["detail"]
    api.problem(released_again, 409, "hold-closed")


def test_a_settle_above_the_hold_and_a_hold_above_the_balance_are_refused(api: Api) -> None:
    user_id = api.registered("over")
    hold_id = place(api, user_id, 5)["hold"]["id"]

    with api.records_nothing():
        over = api.post(f"/v1/users/{user_id}/holds/{hold_id}/settle", {"amount": 6})
        too_much = api.post(f"/v1/users/{user_id}/credits/holds", {"amount": 6})

    api.problem(over, 409, "settle-exceeds-hold")
    refused = api.problem(too_much, 409, "insufficient-balance")
    assert (refused["requested"], refused["available"], refused["held"]) == (6, 5, 5)
    assert refused["shortfall"] == 1
    assert refused["next_allowance_at"] is None and refused["expiring"] is None


def test_another_users_hold_and_an_unknown_one_are_not_found(api: Api) -> None:
    owner, other = api.registered("owner"), api.registered("other")
    hold_id = place(api, owner, 1)["hold"]["id"]

    with api.records_nothing():
        for user_id, some_hold in ((other, hold_id), (owner, "hold_nope"), (owner, "x" * 64)):
            api.problem(
                api.post(f"/v1/users/{user_id}/holds/{some_hold}/settle", {"amount": 0}),
                404,
                "hold-not-found",
            )
    api.problem(api.get(f"/v1/users/{other}/holds/{hold_id}"), 404, "hold-not-found")
    assert api.json(api.get(f"/v1/users/{owner}/holds/{hold_id}"))["id"] == hold_id


def test_a_retried_placement_lands_on_the_same_hold(api: Api) -> None:
    user_id = api.registered("retry")

    with api.records(1):
        first = api.post(f"/v1/users/{user_id}/credits/holds", {"amount": 2}, key="reply-1")
        again = api.post(f"/v1/users/{user_id}/credits/holds", {"amount": 2}, key="reply-1")
    other = api.post(f"/v1/users/{user_id}/credits/holds", {"amount": 3}, key="reply-1")

    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    api.problem(other, 422, "idempotency-key-reused")
    other_user = api.registered("retry-other")
    elsewhere = place(api, other_user, 2, **{})["hold"]["id"]
    assert first.json()["hold"]["id"] != elsewhere


def test_a_reader_sees_holds_but_cannot_place_or_settle_them(api: Api) -> None:
    user_id = api.registered("reader")
    hold_id = place(api, user_id, 1)["hold"]["id"]

    with api.records_nothing():
        api.problem(
            api.post(f"/v1/users/{user_id}/credits/holds", {"amount": 1}, role="reader"),
            403,
            "forbidden",
        )
        api.problem(api.post(f"/v1/users/{user_id}/holds/{hold_id}/release", role="reader"), 403)
    assert api.json(api.get(f"/v1/users/{user_id}/holds", role="reader"))["items"]


def test_a_users_holds_are_listed_oldest_first_by_status_and_in_pages(api: Api) -> None:
    user_id = api.registered("list")
    ids = [place(api, user_id, 1)["hold"]["id"] for _ in range(3)]
    api.check_command(api.post(f"/v1/users/{user_id}/holds/{ids[1]}/settle", {"amount": 1}), 200)

    everything = api.json(api.get(f"/v1/users/{user_id}/holds"))
    still_open = api.json(api.get(f"/v1/users/{user_id}/holds", params={"status": "open"}))
    first_page = api.json(api.get(f"/v1/users/{user_id}/holds", params={"limit": 2}))
    second_page = api.json(
        api.get(f"/v1/users/{user_id}/holds", params={"limit": 2, "after": first_page["next"]})
    )

    assert [h["id"] for h in everything["items"]] == ids
    assert [h["id"] for h in still_open["items"]] == [ids[0], ids[2]]
    assert [h["id"] for h in first_page["items"]] == ids[:2] and first_page["next"] == ids[1]
    assert [h["id"] for h in second_page["items"]] == ids[2:] and second_page["next"] is None
    api.problem(api.get(f"/v1/users/{user_id}/holds", params={"after": "hold_x"}), 422)
    api.problem(api.get("/v1/users/nobody-here/holds"), 404, "user-not-found")


def test_a_forgotten_hold_expires_at_its_instant_and_is_recorded_once(
    api: Api, clock: MovableClock
) -> None:
    user_id = api.registered("expiry")
    hold_id = place(api, user_id, 6, ttl_seconds=60)["hold"]["id"]

    clock.advance(61)
    with api.records_nothing():
        late = api.post(f"/v1/users/{user_id}/holds/{hold_id}/settle", {"amount": 1})
    shown = api.json(api.get(f"/v1/users/{user_id}/holds/{hold_id}"))

    api.problem(late, 409, "hold-expired")
    assert (shown["status"], shown["closed_at"]) == ("expired", shown["expires_at"])

    def recorded() -> list[dict[str, Any]]:
        page = api.json(api.get(f"/v1/users/{user_id}/events"))
        return [e for e in page["items"] if e["type"] == "HoldExpired"]

    wait_until(lambda: len(recorded()) == 1, timeout=20)  # the expiry worker
    (expired,) = recorded()
    assert expired["data"]["expired_at"] == shown["expires_at"]
    assert expired["metadata"]["actor_role"] == "time"
    user = api.current(user_id)
    assert (user["free_credits"], user["free_credits_held"]) == (10, 0)
    api.problem(
        api.post(f"/v1/users/{user_id}/holds/{hold_id}/settle", {"amount": 1}), 409, "hold-expired"
    )


def test_the_history_and_the_past_show_holds(api: Api) -> None:
    user_id = api.registered("past")
    placed = place(api, user_id, 3)

    state = api.json(
        api.get(f"/v1/users/{user_id}/state", params={"at": placed["event"]["recorded_at"]})
    )
    page = api.json(api.get(f"/v1/users/{user_id}/events"))

    assert (state["free_credits"], state["free_credits_held"]) == (7, 3)
    assert page["items"][-1]["type"] == "HoldPlaced"
    assert page["items"][-1]["user"]["free_credits_held"] == 3


@pytest.mark.parametrize(
    "body",
    [
        {"amount": -1},
        {"amount": 0},
        {"amount": 1_000_001},
        {"amount": 10**30},
        {"amount": 1.5},
        {"amount": "5"},
        {"amount": 1, "ttl_seconds": "60"},
        {"amount": 1, "ttl_seconds": 0},
        {"amount": 1, "ttl_seconds": 86_401},
        {"amount": 1, "ttl_seconds": 1.0},
        {"amount": 1, "colour": "red"},
        {},
        [],
    ],
    ids=str,
)
def test_every_hostile_placement_is_a_4xx_that_records_nothing(api: Api, body: Any) -> None:
    user_id = api.registered("hostile")
    with api.records_nothing():
        response = api.post(f"/v1/users/{user_id}/credits/holds", body)
    api.problem(response, 422)


@pytest.mark.parametrize(
    "body", [{"amount": -1}, {"amount": 1_000_001}, {"amount": 0.5}, {"amount": "1"}, {}], ids=str
)
def test_every_hostile_settle_is_a_4xx_that_records_nothing(api: Api, body: Any) -> None:
    user_id = api.registered("hostile-settle")
    hold_id = place(api, user_id, 2)["hold"]["id"]
    with api.records_nothing():
        response = api.post(f"/v1/users/{user_id}/holds/{hold_id}/settle", body)
    api.problem(response, 422)


def test_chat_messages_are_held_the_same_way(api: Api) -> None:
    user_id = api.registered("chat")
    answer = api.check_command(
        api.post(f"/v1/users/{user_id}/chat-messages/holds", {"amount": 1}), 201
    )
    assert answer["hold"]["balance"] == "free_chat_messages"
    assert answer["user"]["free_chat_messages_held"] == 1
