"""However Stripe delivers: the same event many times at once through two
servers on one database, two events of one purchase at once, and a delivery
while PostgreSQL is down (503, so that Stripe retries; the retry applies it
once). A ledger of its own, and a second server beside it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from ledger.db import Database
from tests.e2e.test_outage import PROMPTLY, unreachable
from tests.helpers import ServedLedger, rows
from tests.stripe_events import CATALOG_TOML, SECRET, Payment, signed

if TYPE_CHECKING:
    from tests.e2e.conftest import Api

TIMES = 20


@pytest.fixture(scope="module")
def stripe_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    path = tmp_path_factory.mktemp("stripe") / "catalog.toml"
    path.write_text(CATALOG_TOML)
    return {"LEDGER_STRIPE_WEBHOOK_SECRETS": SECRET, "LEDGER_STRIPE_CATALOG": str(path)}


@pytest.fixture(scope="module")
def api(
    serve_ledger: Callable[..., AbstractContextManager[Api]], stripe_env: dict[str, str]
) -> Iterator[Api]:
    with serve_ledger(**stripe_env) as served:
        yield served


@pytest.fixture(scope="module")
def second(api: Api, stripe_env: dict[str, str]) -> Iterator[str]:
    """Another server on the same database: the URL it serves."""
    with ServedLedger(api.database, env=stripe_env, args=["--no-projector"]) as served:
        yield served.url


def post(url: str, payload: dict[str, Any], timeout: float = 30.0) -> httpx.Response:
    text, signature = signed(payload)
    return httpx.post(
        f"{url}/v1/stripe/webhook",
        content=text.encode(),
        headers={"Content-Type": "application/json", "Stripe-Signature": signature},
        timeout=timeout,
    )


def grants_of_purchases(database: Database, user_id: str) -> int:
    found = rows(
        database,
        "SELECT count(*) FROM ledger_events WHERE originator_id = %s "
        "AND topic = 'ledger.domain:User.CreditsGranted'",
        (user_id,),
    )
    return int(found[0][0])


def test_the_same_event_twenty_times_at_once_through_two_servers_grants_once(
    api: Api, second: str
) -> None:
    payment = Payment(api.new_id("racing"))
    completed = payment.completed()
    urls = [api.url, second] * (TIMES // 2)

    with ThreadPoolExecutor(TIMES) as pool:
        answers = list(pool.map(lambda url: post(url, completed), urls))

    assert {a.status_code for a in answers} == {200}
    assert {a.json()["status"] for a in answers} == {"applied"}
    assert sum(a.headers.get("idempotent-replayed") != "true" for a in answers) == 1
    assert grants_of_purchases(api.database, payment.user_id) == 1
    assert api.current(payment.user_id)["free_credits"] == 110
    stored = rows(
        api.database,
        "SELECT count(*) FROM ledger_stripe_events WHERE event_id = %s",
        (completed["id"],),
    )
    assert stored[0][0] == 1


def test_two_events_of_one_purchase_at_once_through_two_servers_grant_once(
    api: Api, second: str
) -> None:
    payment = Payment(api.new_id("two-events"))
    events = [payment.completed(), payment.async_succeeded()] * (TIMES // 2)
    urls = [api.url, second] * (TIMES // 2)

    with ThreadPoolExecutor(TIMES) as pool:
        answers = list(pool.map(post, urls, events))

    assert {a.status_code for a in answers} == {200}
    statuses = sorted({a.json()["id"]: a.json()["status"] for a in answers}.values())
    assert statuses == ["applied", "ignored"]
    assert grants_of_purchases(api.database, payment.user_id) == 1


def test_a_delivery_while_postgresql_is_down_gets_503_and_its_retry_applies_it_once(
    api: Api, server: Database
) -> None:
    payment = Payment(api.new_id("outage"), sku="lifetime", amount=4900)
    completed = payment.completed()
    before = api.event_count()

    with unreachable(server, api):
        during = post(api.url, completed, timeout=PROMPTLY)

    api.problem(during, 503, "database-unavailable")
    assert int(during.headers["retry-after"]) >= 1
    assert api.event_count() == before

    retried = _first_success(lambda: post(api.url, completed))
    again = post(api.url, completed)

    assert retried.json()["status"] == "applied"
    assert again.headers["idempotent-replayed"] == "true"
    assert grants_of_purchases(api.database, payment.user_id) == 1
    assert api.current(payment.user_id)["level"] == "paid"


def _first_success(call: Callable[[], httpx.Response], tries: int = 100) -> httpx.Response:
    """What Stripe's retries get once the ledger is back."""
    for _ in range(tries):
        response = call()
        if response.status_code == 200:
            return response
        assert response.status_code == 503, response.text
        time.sleep(0.2)
    raise AssertionError("the ledger did not come back")
