"""Webhooks out, end to end: `ledger serve` sends its events to a real receiver
on 127.0.0.1, which verifies every signature with the `standardwebhooks`
package. Retries are brought on by moving the ledger's clock, never by sleeping
through the schedule."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers import MovableClock, ledger_process, wait_until
from tests.webhook_receiver import (
    Answer,
    Received,
    Receiver,
    attempts,
    deliveries,
    sending_here,
)

if TYPE_CHECKING:
    from tests.e2e.conftest import Api


@pytest.fixture(scope="module")
def clock() -> Iterator[MovableClock]:
    with tempfile.TemporaryDirectory() as folder:
        yield MovableClock(Path(folder) / "offset")


@pytest.fixture(scope="module")
def hooks(
    serve_ledger: Callable[..., contextlib.AbstractContextManager[Api]], clock: MovableClock
) -> Iterator[Api]:
    """A ledger that may send to 127.0.0.1 over http, on a clock the tests move."""
    with serve_ledger(**sending_here(clock)) as served:
        yield served


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def endpoints(hooks: Api) -> Iterator[Callable[..., dict[str, Any]]]:
    """Creates endpoints (every event type unless told), deleted after the test."""
    made: list[str] = []

    def create(url: str, **fields: Any) -> dict[str, Any]:
        body = {"url": url, "event_types": ["*"], **fields}
        created = dict(hooks.json(hooks.post("/v1/webhook-endpoints", body), 201))
        made.append(created["id"])
        return created

    yield create
    for endpoint_id in made:
        hooks.request("DELETE", f"/v1/webhook-endpoints/{endpoint_id}")


ENABLED = {"disabled": False}


def of_user(received: list[Received], user_id: str) -> list[Received]:
    return [r for r in received if r.payload["data"]["user"]["id"] == user_id]


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def test_every_event_type_arrives_once_in_order_signed(
    hooks: Api, receiver: Receiver, clock: MovableClock, endpoints: Callable[..., Any]
) -> None:
    created = endpoints(receiver.url("/all"), low_balance_threshold=5)
    user_id = hooks.registered("every")
    users = f"/v1/users/{user_id}"
    hooks.check_command(hooks.post(f"{users}/credits/grants", {"amount": 5}))
    hooks.check_command(hooks.post(f"{users}/credits/spends", {"amount": 12}))  # 15 -> 3: low
    hooks.check_command(hooks.post(f"{users}/credits/spends", {"amount": 3}))  # -> 0: depleted
    hooks.check_command(hooks.post(f"{users}/chat-messages/grants", {"amount": 2}))
    hooks.check_command(hooks.post(f"{users}/chat-messages/spends", {"amount": 1}))
    placed = hooks.json(hooks.post(f"{users}/chat-messages/holds", {"amount": 3}), 201)
    hooks.json(hooks.post(f"{users}/holds/{placed['hold']['id']}/settle", {"amount": 1}))
    placed = hooks.json(hooks.post(f"{users}/chat-messages/holds", {"amount": 2}), 201)
    hooks.json(hooks.post(f"{users}/holds/{placed['hold']['id']}/release", {}))
    hooks.json(hooks.post(f"{users}/chat-messages/holds", {"amount": 1, "ttl_seconds": 1}), 201)
    expires = rfc3339(clock() + timedelta(seconds=30))
    hooks.check_command(hooks.post(f"{users}/credits/grants", {"amount": 1, "expires_at": expires}))
    hooks.check_command(
        hooks.post(f"{users}/chat-messages/grants", {"amount": 1, "expires_at": expires})
    )
    hooks.check_command(
        hooks.put(f"{users}/plan", {"level": "paid", "renewal_period": "lifetime"}), 200
    )
    hooks.json(hooks.put(f"{users}/allowances/credits", {"amount": 7, "period": "day"}))
    hooks.json(hooks.request("DELETE", f"{users}/allowances/credits"))
    clock.advance(60)  # the hold and the grants expire: the expiry worker records it
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as csv:
        csv.write(
            f"id,level,renewal_period,free_credits,free_chat_messages\n{user_id}-old,free,,3,4\n"
        )
    imported = ledger_process("import", csv.name, database=hooks.database)
    assert imported.wait(60) == 0

    expected = {
        "user.registered", "credits.granted", "credits.spent", "balance.low",
        "balance.depleted", "chat_messages.granted", "chat_messages.spent", "hold.placed",
        "hold.settled", "hold.released", "hold.expired", "credits.expired",
        "chat_messages.expired", "plan.changed", "allowance.set", "allowance.granted",
        "allowance.removed",
    }  # fmt: skip

    def types() -> set[str]:
        return {r.type for r in of_user(receiver.at("/all"), user_id)}

    wait_until(lambda: expected <= types(), timeout=30)
    wait_until(lambda: bool(of_user(receiver.at("/all"), f"{user_id}-old")), timeout=30)

    got = of_user(receiver.at("/all"), user_id)
    assert all(r.verified_by(created["secret"]) for r in got)
    assert len({r.id for r in got}) == len(got), "a message arrived twice"
    positions = [r.payload["data"]["event"]["position"] for r in got]
    assert positions == sorted(positions), "out of position order"
    (low,) = [r.payload for r in got if r.type == "balance.low"]
    assert low["data"]["user"]["free_credits"] == 3
    assert low["data"]["balance"] == "free_credits" and low["data"]["threshold"] == 5
    (depleted,) = [r.payload for r in got if r.type == "balance.depleted"]
    assert depleted["data"]["event"]["type"] == "CreditsSpent"
    assert depleted["data"]["user"]["free_credits"] == 0
    for r in got:
        assert set(r.payload) == {"type", "timestamp", "data"}
        assert r.payload["timestamp"] == r.payload["data"]["event"]["recorded_at"]
        assert r.headers["webhook-timestamp"].isdigit()
    (old,) = of_user(receiver.at("/all"), f"{user_id}-old")
    assert old.type == "user.imported" and old.verified_by(created["secret"])


def test_500s_and_timeouts_are_tried_again_on_schedule_with_the_same_id(
    hooks: Api, receiver: Receiver, clock: MovableClock, endpoints: Callable[..., Any]
) -> None:
    answers = iter([(500, 0.0), (200, 2.0), (200, 0.0)])  # a 500, a timeout (1 s), then ok
    receiver.answer("/flaky", lambda _: next(answers, (200, 0.0)))
    created = endpoints(receiver.url("/flaky"), event_types=["user.registered"])
    user_id = hooks.registered("flaky")

    wait_until(lambda: attempts(hooks, created["id"]) == 1, timeout=15)
    (pending,) = deliveries(hooks, created["id"], status="pending")
    assert [a["http_status"] for a in pending["attempts"]] == [500]
    retry_at = datetime.fromisoformat(pending["next_attempt_at"])
    attempted = datetime.fromisoformat(pending["attempts"][0]["attempted_at"])
    assert 4.5 <= (retry_at - attempted).total_seconds() <= 5.5  # 5 s, give or take a tenth

    clock.advance(6)
    wait_until(lambda: attempts(hooks, created["id"]) == 2, timeout=15)
    (pending,) = deliveries(hooks, created["id"], status="pending")
    assert pending["attempts"][1]["http_status"] is None
    assert "no answer within 1 s" in pending["attempts"][1]["error"]
    assert len(receiver.at("/flaky")) == 2  # no attempt before its time (5 min)

    clock.advance(6 * 60)
    wait_until(lambda: bool(deliveries(hooks, created["id"], status="succeeded")), timeout=15)

    got = receiver.at("/flaky")
    assert len(got) == 3 and len({r.id for r in got}) == 1
    assert all(r.verified_by(created["secret"]) for r in got)
    assert got[0].payload["data"]["user"]["id"] == user_id
    (done,) = deliveries(hooks, created["id"], status="succeeded")
    assert [a["http_status"] for a in done["attempts"]] == [500, None, 200]
    assert done["id"] == got[0].id


def test_a_receiver_down_for_a_while_gets_everything_once_back(
    hooks: Api, clock: MovableClock, endpoints: Callable[..., Any]
) -> None:
    down = Receiver()  # not started: connections are refused
    created = endpoints(down.url("/down"), event_types=["user.registered", "credits.spent"])
    user_id = hooks.registered("down")
    for _ in range(4):
        hooks.check_command(hooks.post(f"/v1/users/{user_id}/credits/spends", {"amount": 1}))

    def refused() -> bool:
        items = deliveries(hooks, created["id"])
        return bool(items) and bool(items[0]["attempts"])

    wait_until(refused, timeout=15)
    first = deliveries(hooks, created["id"])[0]
    assert first["attempts"][0]["http_status"] is None and first["attempts"][0]["error"]
    # The user's later messages wait behind the first: nothing else was tried.
    assert all(not d["attempts"] for d in deliveries(hooks, created["id"])[1:])

    with down:
        clock.advance(6)
        wait_until(lambda: len(down.at("/down", 200)) == 5, timeout=20)
        got = down.at("/down")
    assert [r.type for r in got] == ["user.registered"] + ["credits.spent"] * 4
    assert all(r.verified_by(created["secret"]) for r in got)
    assert [r.id for r in got] == [d["id"] for d in deliveries(hooks, created["id"])]
    assert got[0].id == first["id"]  # the retry kept its id


def test_a_410_disables_the_endpoint_at_once(
    hooks: Api, receiver: Receiver, endpoints: Callable[..., Any]
) -> None:
    receiver.answer("/gone", lambda _: (410, 0.0))
    created = endpoints(receiver.url("/gone"), event_types=["user.registered", "credits.spent"])
    user_id = hooks.registered("gone")

    def disabled() -> bool:
        return bool(hooks.json(hooks.get(f"/v1/webhook-endpoints/{created['id']}"))["disabled"])

    wait_until(disabled, timeout=15)
    endpoint = hooks.json(hooks.get(f"/v1/webhook-endpoints/{created['id']}"))
    assert endpoint["disabled_reason"] == "the endpoint answered 410 Gone"
    hooks.check_command(hooks.post(f"/v1/users/{user_id}/credits/spends", {"amount": 1}))
    hooks.current(user_id)
    wait_until(lambda: hooks.projection()["lag"] == 0)
    wait_until(lambda: len(deliveries(hooks, created["id"], status="pending")) == 2, timeout=15)
    assert len(receiver.at("/gone")) == 1

    receiver.answer("/gone", lambda _: (200, 0.0))  # back: what waited is sent at once
    hooks.json(hooks.request("PATCH", f"/v1/webhook-endpoints/{created['id']}", json=ENABLED))
    wait_until(lambda: len(receiver.at("/gone", 200)) == 2, timeout=15)
    got = receiver.at("/gone")
    assert [r.type for r in got] == ["user.registered", "user.registered", "credits.spent"]
    assert got[0].id == got[1].id and all(r.verified_by(created["secret"]) for r in got)


def pending_metric(hooks: Api, endpoint_id: str) -> float:
    """`ledger_webhook_endpoint_pending` of the endpoint, as /metrics shows it."""
    text = hooks.get("/metrics", role=None).text
    (line,) = [
        line
        for line in text.splitlines()
        if line.startswith(f'ledger_webhook_endpoint_pending{{endpoint="{endpoint_id}"}}')
    ]
    return float(line.split()[-1])


def test_what_happens_while_an_endpoint_is_disabled_arrives_in_order_once_enabled(
    hooks: Api, receiver: Receiver, endpoints: Callable[..., Any]
) -> None:
    created = endpoints(receiver.url("/paused"), event_types=["user.registered", "credits.spent"])
    path = f"/v1/webhook-endpoints/{created['id']}"
    off = hooks.json(hooks.request("PATCH", path, json={"disabled": True}))
    assert off["disabled_reason"] == "disabled by an operator"
    users = [hooks.registered("paused") for _ in range(2)]
    for user_id in users:
        for amount in (1, 2, 3):
            spend = hooks.post(f"/v1/users/{user_id}/credits/spends", {"amount": amount})
            hooks.check_command(spend)

    wait_until(lambda: len(deliveries(hooks, created["id"], status="pending")) == 8, timeout=15)
    assert pending_metric(hooks, created["id"]) == 8
    time.sleep(1.0)  # time enough for a sender to send, were it to
    assert receiver.at("/paused") == [] and attempts(hooks, created["id"]) == 0

    on = hooks.json(hooks.request("PATCH", path, json=ENABLED))

    assert on["disabled"] is False and on["disabled_reason"] is None
    wait_until(lambda: len(deliveries(hooks, created["id"], status="succeeded")) == 8, timeout=20)
    got = receiver.at("/paused")
    assert len(got) == 8 and len({r.id for r in got}) == 8
    assert all(r.verified_by(created["secret"]) for r in got)
    for user_id in users:
        mine = of_user(got, user_id)
        assert [r.type for r in mine] == ["user.registered"] + ["credits.spent"] * 3
        assert [r.payload["data"]["event"]["data"].get("amount") for r in mine[1:]] == [1, 2, 3]
        positions = [r.payload["data"]["event"]["position"] for r in mine]
        assert positions == sorted(positions)
    assert pending_metric(hooks, created["id"]) == 0


def answering(status: int) -> Answer:
    return lambda _: (status, 0.0)


def test_a_redirect_is_a_failed_attempt_and_never_followed(
    hooks: Api, receiver: Receiver, endpoints: Callable[..., Any]
) -> None:
    made: dict[int, dict[str, Any]] = {}
    for status in (301, 302, 303, 307, 308):
        elsewhere = receiver.url(f"/moved-{status}/elsewhere")
        receiver.answer(f"/moved-{status}", answering(status), headers={"location": elsewhere})
        made[status] = endpoints(receiver.url(f"/moved-{status}"), event_types=["user.registered"])
    hooks.registered("moved")

    wait_until(lambda: all(attempts(hooks, e["id"]) >= 1 for e in made.values()), timeout=15)
    for status, endpoint in made.items():
        (pending,) = deliveries(hooks, endpoint["id"], status="pending")
        assert pending["attempts"][0]["http_status"] == status
        assert pending["next_attempt_at"] is not None  # tried again later, as any failure
        arrived = receiver.at(f"/moved-{status}")
        assert arrived and all(r.method == "POST" for r in arrived)
        assert all(r.verified_by(endpoint["secret"]) for r in arrived)
        assert receiver.at(f"/moved-{status}/elsewhere") == []


def test_a_rotated_secret_signs_beside_the_new_one_for_a_day(
    hooks: Api, receiver: Receiver, clock: MovableClock, endpoints: Callable[..., Any]
) -> None:
    created = endpoints(receiver.url("/rotated"), event_types=["user.registered"])
    rotated = hooks.json(hooks.post(f"/v1/webhook-endpoints/{created['id']}/rotate-secret"))
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
    until = datetime.fromisoformat(rotated["previous_secret_until"])
    assert timedelta(hours=23.9) < until - clock() <= timedelta(hours=24)

    hooks.registered("rotated")
    wait_until(lambda: len(receiver.at("/rotated")) == 1, timeout=15)
    (both,) = receiver.at("/rotated")
    assert len(both.headers["webhook-signature"].split(" ")) == 2
    assert both.verified_by(created["secret"]) and both.verified_by(rotated["secret"])

    clock.advance(25 * 3600)
    hooks.registered("rotated")
    wait_until(lambda: len(receiver.at("/rotated")) == 2, timeout=15)
    later = receiver.at("/rotated")[1]
    assert len(later.headers["webhook-signature"].split(" ")) == 1
    assert later.verified_by(rotated["secret"]) and not later.verified_by(created["secret"])


def test_recover_sends_everything_since_a_time_again(
    hooks: Api, receiver: Receiver, clock: MovableClock, endpoints: Callable[..., Any]
) -> None:
    created = endpoints(receiver.url("/recover"), event_types=["user.registered", "credits.spent"])
    users: list[str] = []

    def succeeded(count: int) -> Callable[[], bool]:
        def done() -> bool:
            found = deliveries(hooks, created["id"], status="succeeded")
            return len([d for d in found if d["user_id"] in users]) == count

        return done

    def arrived() -> list[Received]:
        return [r for r in receiver.at("/recover") if r.payload["data"]["user"]["id"] in users]

    users.append(hooks.registered("before"))
    wait_until(succeeded(1), timeout=15)
    since = clock()
    users.append(hooks.registered("after"))
    hooks.check_command(hooks.post(f"/v1/users/{users[1]}/credits/spends", {"amount": 1}))
    wait_until(succeeded(3), timeout=15)
    first = [r.id for r in arrived()]
    assert len(first) == 3

    answer = hooks.json(
        hooks.post(f"/v1/webhook-endpoints/{created['id']}/recover", {"since": rfc3339(since)}),
        202,
    )

    assert answer["queued"] == 2
    wait_until(lambda: len(arrived()) >= 5, timeout=15)
    wait_until(succeeded(3), timeout=15)
    again = [r.id for r in arrived()[3:]]
    assert again == first[1:]
    assert all(r.verified_by(created["secret"]) for r in arrived())


def test_a_failed_delivery_is_sent_again_by_hand(
    hooks: Api, receiver: Receiver, clock: MovableClock, endpoints: Callable[..., Any]
) -> None:
    receiver.answer("/failing", lambda _: (503, 0.0))
    created = endpoints(receiver.url("/failing"), event_types=["user.registered"])
    hooks.registered("failing")
    for tried in range(1, 9):  # the whole schedule, each step brought on by moving the clock
        wait_until(lambda: attempts(hooks, created["id"]) == tried, timeout=15)  # noqa: B023
        clock.advance(11 * 3600 + 60)
    wait_until(lambda: bool(deliveries(hooks, created["id"], status="failed")), timeout=20)
    (failed,) = deliveries(hooks, created["id"], status="failed")
    assert len(failed["attempts"]) == 8 and len(receiver.at("/failing")) == 8
    assert failed["next_attempt_at"] is None

    receiver.answer("/failing", lambda _: (204, 0.0))
    retried = hooks.post(f"/v1/webhook-deliveries/{failed['id']}/retry", key="retry-1")

    assert hooks.json(retried, 202)["status"] == "pending"
    wait_until(lambda: bool(deliveries(hooks, created["id"], status="succeeded")), timeout=15)
    assert receiver.at("/failing")[-1].id == failed["id"]
    assert (
        hooks.post(f"/v1/webhook-deliveries/{failed['id']}/retry", key="retry-1").headers[
            "Idempotent-Replayed"
        ]
        == "true"
    )
    missing = hooks.post("/v1/webhook-deliveries/msg_nothing/retry")
    hooks.problem(missing, 404, "not-found")


def test_metrics_count_the_messages(hooks: Api) -> None:
    text = hooks.get("/metrics", role=None).text

    assert 'ledger_webhook_messages{status="succeeded"}' in text
    assert "ledger_webhook_endpoint_lag_seconds" in text
