"""Grants that expire, in priority order, and allowances that reset, over HTTP:
a promotion that lapses, a monthly chat allowance, and what the grants say."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers import MovableClock, wait_until

if TYPE_CHECKING:
    from tests.e2e.conftest import Api

GRANT_FIELDS = {
    "id",
    "balance",
    "amount",
    "remaining",
    "held",
    "spent",
    "expired",
    "clawed_back",
    "priority",
    "expires_at",
    "granted_at",
    "reason",
    "source",
    "status",
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


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def grants(api: Api, user_id: str, at_least: int, **params: Any) -> list[dict[str, Any]]:
    page = api.json(
        api.get(f"/v1/users/{user_id}/grants", params={"min_position": at_least, **params})
    )
    for grant in page["items"]:
        assert set(grant) == GRANT_FIELDS
    return list(page["items"])


def test_a_promotional_grant_lapses_at_its_instant(api: Api, clock: MovableClock) -> None:
    user_id = api.registered("promo")
    ends = clock() + timedelta(hours=1)
    granted = api.check_command(
        api.post(
            f"/v1/users/{user_id}/credits/grants",
            {"amount": 50, "reason": "promotion", "expires_at": rfc3339(ends)},
        )
    )
    grant_id = granted["event"]["data"]["grant_id"]
    assert granted["user"]["free_credits"] == 60
    assert granted["user"]["free_credits_next_expiry_amount"] == 50
    spent = api.check_command(api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 5}))
    assert spent["event"]["data"]["grants"] == [{"grant_id": grant_id, "amount": 5}]

    clock.advance(3601)
    with api.records_nothing():
        refused = api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 11})
    assert api.problem(refused, 409, "insufficient-balance")["available"] == 10

    def lapsed() -> bool:
        return api.current(user_id)["free_credits"] == 10

    wait_until(lapsed, timeout=20)  # recorded by the expiry worker
    *registered, promotion = grants(api, user_id, 0)
    # One event made both of the registration's grants: they come in the order of their ids.
    chat, registration = sorted(registered, key=lambda g: str(g["balance"]))
    assert chat["balance"] == "free_chat_messages" and chat["amount"] == 20
    assert (promotion["id"], promotion["status"]) == (grant_id, "expired")
    assert (promotion["spent"], promotion["expired"], promotion["remaining"]) == (5, 45, 0)
    assert registration["source"] == "registration"
    assert [g["id"] for g in grants(api, user_id, 0, status="expired")] == [grant_id]
    user = api.current(user_id)
    assert user["free_credits_next_expiry_at"] is None


def test_grants_are_consumed_by_priority_then_expiry_then_age(
    api: Api, clock: MovableClock
) -> None:
    user_id = api.registered("order")
    later = rfc3339(clock() + timedelta(days=30))
    sooner = rfc3339(clock() + timedelta(days=2))
    ids = []
    for body in (
        {"amount": 5, "expires_at": later},
        {"amount": 5, "expires_at": sooner},
        {"amount": 5, "priority": 10},
    ):
        answer = api.check_command(api.post(f"/v1/users/{user_id}/credits/grants", body))
        ids.append(answer["event"]["data"]["grant_id"])

    spent = api.check_command(api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 12}))

    drawn = [(p["grant_id"], p["amount"]) for p in spent["event"]["data"]["grants"]]
    assert drawn == [(ids[2], 5), (ids[1], 5), (ids[0], 2)]
    listed = grants(api, user_id, spent["event"]["position"], status="active")
    assert [g["id"] for g in listed][-1] == ids[0]
    used = grants(api, user_id, spent["event"]["position"], status="used")
    assert {g["id"] for g in used} == {ids[1], ids[2]}


def test_a_monthly_chat_allowance_resets_to_its_amount(api: Api, clock: MovableClock) -> None:
    user_id = api.registered("allowance")
    set_ = api.check_command(
        api.put(f"/v1/users/{user_id}/allowances/chat-messages", {"amount": 20, "period": "month"}),
        200,
    )
    assert set_["user"]["free_chat_messages"] == 40  # the 20 registered, and this month's 20
    api.check_command(api.post(f"/v1/users/{user_id}/chat-messages/spends", {"amount": 15}))

    (allowance,) = api.json(
        api.get(
            f"/v1/users/{user_id}/allowances",
            params={"min_position": set_["event"]["position"] + 1},
        )
    )["items"]
    assert (allowance["amount"], allowance["period"]) == (20, "month")
    resets = datetime.fromisoformat(allowance["next_reset_at"])

    clock.advance((resets - clock()).total_seconds() + 1)
    wait_until(lambda: api.current(user_id)["free_chat_messages"] == 40, timeout=20)
    page = api.json(api.get(f"/v1/users/{user_id}/events"))
    kinds = [e["type"] for e in page["items"]]
    assert kinds[-2:] == ["ChatMessagesExpired", "AllowanceGranted"]
    assert page["items"][-1]["data"]["period_start"] == allowance["next_reset_at"]

    stopped = api.request("DELETE", f"/v1/users/{user_id}/allowances/chat-messages")
    assert api.check_command(stopped, 200)["event"]["type"] == "AllowanceRemoved"
    after = api.json(
        api.get(
            f"/v1/users/{user_id}/allowances",
            params={"min_position": api.current(user_id)["position"]},
        )
    )
    assert after["items"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"amount": 1, "expires_at": "2020-01-01T00:00:00Z"},
        {"amount": 1, "expires_at": "2200-01-01T00:00:00Z"},
        {"amount": 1, "expires_at": "tomorrow"},
        {"amount": 1, "expires_at": 1767225600},
        {"amount": 1, "expires_at": "2027-01-01T00:00:00"},
        {"amount": 1, "priority": -1},
        {"amount": 1, "priority": 101},
        {"amount": 1, "priority": "5"},
    ],
    ids=str,
)
def test_a_grant_with_a_bad_expiry_or_priority_is_a_4xx_that_records_nothing(
    api: Api, body: dict[str, Any]
) -> None:
    user_id = api.registered("bad-grant")
    with api.records_nothing():
        response = api.post(f"/v1/users/{user_id}/credits/grants", body)
    api.problem(response, 422)


@pytest.mark.parametrize(
    "body",
    [
        {"amount": 0, "period": "day"},
        {"amount": 5, "period": "year"},
        {"amount": 5},
        {"amount": 5, "period": "day", "anchor": "1900-01-01T00:00:00Z"},
        {"amount": 5, "period": "day", "anchor": 0},
    ],
    ids=str,
)
def test_a_bad_allowance_is_a_4xx_that_records_nothing(api: Api, body: dict[str, Any]) -> None:
    user_id = api.registered("bad-allowance")
    with api.records_nothing():
        response = api.put(f"/v1/users/{user_id}/allowances/credits", body)
    api.problem(response, 422)
    with api.records_nothing():
        none_to_stop = api.request("DELETE", f"/v1/users/{user_id}/allowances/credits")
    api.problem(none_to_stop, 422)
