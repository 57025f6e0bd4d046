"""Selling with Stripe, over HTTP: a served ledger with a webhook secret and a
catalogue receives Stripe's deliveries as Stripe sends them (signed, with no
API key), turns purchases into plans and credits, refunds and disputes into
clawbacks, and lists what arrived."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from projections.views import parse_timestamp
from tests.helpers import head, rows
from tests.stripe_events import (
    CATALOG_TOML,
    OLD_SECRET,
    SECRET,
    Payment,
    event,
    new_id,
    signed,
)

if TYPE_CHECKING:
    from tests.e2e.conftest import Api

WEBHOOK = "/v1/stripe/webhook"


@pytest.fixture(scope="module")
def catalog_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stripe") / "catalog.toml"
    path.write_text(CATALOG_TOML)
    return path


@pytest.fixture(scope="module")
def api(
    serve_ledger: Callable[..., AbstractContextManager[Api]], catalog_file: Path
) -> Iterator[Api]:
    """A ledger whose webhook takes the current secret and, being rotated out, the old one."""
    with serve_ledger(
        LEDGER_STRIPE_WEBHOOK_SECRETS=f"{SECRET}, {OLD_SECRET}",
        LEDGER_STRIPE_CATALOG=str(catalog_file),
    ) as served:
        yield served


def send(
    api: Api,
    payload: dict[str, Any] | str,
    *,
    secret: str = SECRET,
    at: int | None = None,
    header: str | None = None,
) -> httpx.Response:
    """Deliver as Stripe does: the raw body, its signature, no API key."""
    text, signature = signed(payload, secret, at=at)
    headers = {"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": signature}
    if header is not None:
        headers["Stripe-Signature"] = header
    return api.request("POST", WEBHOOK, role=None, headers=headers, content=text.encode())


def delivered(api: Api, payload: dict[str, Any], status: str = "applied") -> dict[str, Any]:
    body = api.json(send(api, payload))
    assert body["status"] == status, body
    return dict(body)


def stripe_rows(api: Api) -> int:
    return int(rows(api.database, "SELECT count(*) FROM ledger_stripe_events")[0][0])


def history(api: Api, user_id: str) -> list[dict[str, Any]]:
    page = api.json(api.get(f"/v1/users/{user_id}/events"))
    return [api.check_event(item) for item in page["items"]]


def test_a_lifetime_purchase_makes_a_new_user_paid_with_its_credits(api: Api) -> None:
    payment = Payment(api.new_id("buyer"), sku="lifetime", amount=4900)
    completed = payment.completed()

    answer = delivered(api, completed)

    assert answer == {
        "id": completed["id"],
        "type": "checkout.session.completed",
        "object_id": payment.session_id,
        "status": "applied",
        "error": None,
        "user_id": payment.user_id,
    }
    user = api.current(payment.user_id)
    assert (user["level"], user["renewal_period"], user["free_credits"]) == (
        "paid",
        "lifetime",
        510,
    )
    events = history(api, payment.user_id)
    assert [e["type"] for e in events] == [
        "UserRegistered",
        "PurchaseCompleted",
        "CreditsGranted",
        "PlanChanged",
    ]
    purchase = events[1]["data"]
    assert {k: purchase[k] for k in ("purchase_id", "sku", "amount", "currency")} == {
        "purchase_id": payment.session_id,
        "sku": "lifetime",
        "amount": 4900,
        "currency": "usd",
    }
    assert purchase["payment_intent"] == payment.payment_intent
    for e in events:
        assert e["metadata"]["stripe_event_id"] == completed["id"]
        assert e["metadata"]["stripe_object_id"] == payment.session_id
        assert e["metadata"]["actor_role"] == "stripe"


def test_a_credit_pack_is_a_grant_of_the_purchase_with_the_skus_priority_and_expiry(
    api: Api,
) -> None:
    payment = Payment(api.registered("pack"))

    delivered(api, payment.completed())

    grants = api.json(
        api.get(f"/v1/users/{payment.user_id}/grants", params={"min_position": head(api.database)})
    )["items"]
    (pack,) = [g for g in grants if g["source"] == "purchase"]
    assert (pack["amount"], pack["remaining"], pack["priority"]) == (100, 100, 60)
    expires_in = parse_timestamp(pack["expires_at"]) - datetime.now(UTC)
    assert abs(expires_in - timedelta(days=365)) < timedelta(minutes=10)


def test_a_refund_then_a_dispute_take_back_the_pack_once_and_the_list_says_what_arrived(
    api: Api,
) -> None:
    payment = Payment(api.registered("refunded"))
    completed = payment.completed()
    delivered(api, completed)
    refund = payment.refund(new_id("re"), 450)
    withdrawn = payment.withdrawn(new_id("du"))

    delivered(api, refund)
    delivered(api, withdrawn)
    delivered(api, payment.charge_refunded(450), "ignored")

    user = api.current(payment.user_id)
    assert user["free_credits"] == 10
    refunded, disputed = [
        e for e in history(api, payment.user_id) if e["type"].startswith("Purchase")
    ][1:]
    assert refunded["data"]["clawed_back"] == 50
    assert refunded["metadata"]["stripe_object_id"] == refund["data"]["object"]["id"]
    assert disputed["data"]["clawed_back"] == 50
    listed = api.json(api.get("/v1/stripe/events", params={"limit": 1000}))["items"]
    mine = [item for item in listed if item["payment_intent"] == payment.payment_intent]
    assert [(item["id"], item["status"]) for item in mine] == [
        (completed["id"], "applied"),
        (refund["id"], "applied"),
        (withdrawn["id"], "applied"),
        (mine[-1]["id"], "ignored"),
    ]
    assert all(item["user_id"] == payment.user_id for item in mine)


def test_a_refund_after_the_credits_were_spent_leaves_0_with_the_shortfall_recorded(
    api: Api,
) -> None:
    payment = Payment(api.registered("spender"))
    delivered(api, payment.completed())
    spend = f"/v1/users/{payment.user_id}/credits/spends"
    api.check_command(api.post(spend, {"amount": 70}, role="service"))  # 10 free, then 60 of 100
    hold = api.check_command(
        api.post(f"/v1/users/{payment.user_id}/credits/holds", {"amount": 30}, role="service")
    )["hold"]

    delivered(api, payment.refund(new_id("re"), 900))
    refunded = history(api, payment.user_id)[-1]
    api.check_command(
        api.post(
            f"/v1/users/{payment.user_id}/holds/{hold['id']}/settle", {"amount": 10}, role="service"
        ),
        200,
    )

    assert {k: refunded["data"][k] for k in ("clawed_back", "owed", "shortfall")} == {
        "clawed_back": 40,
        "owed": 30,
        "shortfall": 60,
    }
    user = api.current(payment.user_id)
    assert (user["free_credits"], user["free_credits_held"]) == (0, 0)
    (pack,) = [
        g
        for g in api.json(api.get(f"/v1/users/{payment.user_id}/grants"))["items"]
        if g["source"] == "purchase"
    ]
    assert (pack["spent"], pack["clawed_back"], pack["remaining"], pack["held"]) == (70, 30, 0, 0)
    assert api.projection()["status"] == "running"


def test_the_list_of_stripe_events_pages_and_filters_by_status(api: Api) -> None:
    for _ in range(3):
        delivered(
            api, event("customer.created", {"id": new_id("cus"), "object": "customer"}), "ignored"
        )

    first = api.json(api.get("/v1/stripe/events", params={"status": "ignored", "limit": 2}))
    second = api.json(
        api.get("/v1/stripe/events", params={"status": "ignored", "after": first["next"]})
    )

    assert len(first["items"]) == 2 and first["next"] == first["items"][-1]["id"]
    assert {item["status"] for item in first["items"] + second["items"]} == {"ignored"}
    assert not {i["id"] for i in first["items"]} & {i["id"] for i in second["items"]}
    api.problem(api.get("/v1/stripe/events", role="service"), 403, "forbidden")
    api.problem(api.get("/v1/stripe/events", params={"after": "evt_unknown"}), 422)


def test_an_event_the_ledger_does_not_act_on_is_recorded_as_ignored(api: Api) -> None:
    ignored = event("customer.created", {"id": new_id("cus"), "object": "customer"})

    with api.records_nothing():
        answer = delivered(api, ignored, "ignored")

    assert answer["object_id"] == ignored["data"]["object"]["id"]
    assert "does not act on customer.created" in answer["error"]


def test_the_same_event_again_gets_its_first_answer(api: Api) -> None:
    payment = Payment(api.new_id("again"))
    completed = payment.completed()
    first = send(api, completed)

    with api.records_nothing():
        again = send(api, completed)

    assert api.json(again) == api.json(first)
    assert again.headers["idempotent-replayed"] == "true"


def test_a_delivery_signed_with_the_secret_being_rotated_out_is_accepted(api: Api) -> None:
    response = send(api, Payment(api.new_id("rotated")).completed(), secret=OLD_SECRET)

    assert api.json(response)["status"] == "applied"


def test_a_delivery_signed_with_both_secrets_while_they_rotate_is_accepted(api: Api) -> None:
    text, old = signed(Payment(api.new_id("rotating")).completed(), OLD_SECRET)
    timestamp = int(old.split(",")[0].removeprefix("t="))
    _, new = signed(text, SECRET, at=timestamp)
    both = f"{old},{new.split(',')[1]}"  # t=...,v1=<old>,v1=<new>, as Stripe signs then

    response = send(api, text, header=both)

    assert api.json(response)["status"] == "applied"


@pytest.mark.parametrize(
    "how",
    [
        "no signature",
        "another secret",
        "tampered body",
        "301 s old",
        "301 s ahead",
        "not a signature",
    ],
)
def test_a_delivery_not_signed_by_stripe_now_is_refused_and_records_nothing(
    api: Api, how: str
) -> None:
    payload = Payment(api.new_id("forged")).completed()
    now = int(time.time())
    text, _ = signed(payload)
    header = {
        "no signature": "",
        "another secret": signed(payload, "whsec_not_ours")[1],
        "tampered body": signed(text.replace("900", "9"))[1],
        "301 s old": signed(payload, at=now - 301)[1],
        "301 s ahead": signed(payload, at=now + 301)[1],
        "not a signature": "t=abc,v1=zz",
    }[how]
    before = stripe_rows(api)

    with api.records_nothing():
        response = api.request(
            "POST",
            WEBHOOK,
            role=None,
            headers={"Content-Type": "application/json", "Stripe-Signature": header},
            content=text.encode(),
        )

    api.problem(response, 400, "invalid-signature")
    assert stripe_rows(api) == before


@pytest.mark.parametrize("skew", [-290, 290])
def test_a_signature_within_the_tolerance_either_way_is_accepted(api: Api, skew: int) -> None:
    response = send(api, Payment(api.new_id("skew")).completed(), at=int(time.time()) + skew)

    assert api.json(response)["status"] == "applied"


@pytest.mark.parametrize(
    ("body", "status", "type_"),
    [
        ("not json at all", 400, "invalid-payload"),
        ('{"id": "evt_1", "object": "event"}', 400, "invalid-payload"),
        ("[1, 2, 3]", 400, "invalid-payload"),
        ("x" * (64 * 1024 + 1), 413, "payload-too-large"),
    ],
)
def test_a_body_that_is_not_a_stripe_event_is_refused_and_records_nothing(
    api: Api, body: str, status: int, type_: str
) -> None:
    before = stripe_rows(api)

    with api.records_nothing():
        response = send(api, body)

    api.problem(response, status, type_)
    assert stripe_rows(api) == before


def test_a_session_of_an_unknown_shape_is_refused_and_records_nothing(api: Api) -> None:
    payment = Payment(api.new_id("shape"))
    odd = payment.completed()
    odd["data"]["object"]["amount_total"] = "4900"
    before = stripe_rows(api)

    with api.records_nothing():
        api.problem(send(api, odd), 400, "invalid-payload")

    assert stripe_rows(api) == before


def test_every_other_route_under_v1_still_needs_a_key(api: Api) -> None:
    api.problem(api.get("/v1/stripe/events", role=None), 401, "unauthorized")
    api.problem(api.post("/v1/users", {"id": "no-key"}, role=None), 401, "unauthorized")


def test_deliveries_are_counted_by_type_and_outcome(api: Api) -> None:
    delivered(api, Payment(api.new_id("counted")).completed())
    send(api, "not json at all")

    metrics = api.get("/metrics", role=None).text

    assert (
        'ledger_stripe_deliveries_total{outcome="applied",type="checkout.session.completed"}'
        in metrics
    )
    assert 'ledger_stripe_deliveries_total{outcome="invalid-payload",type="unverified"}' in metrics


def test_without_webhook_secrets_the_webhook_is_not_found(shared_api: Api) -> None:
    payload = Payment(shared_api.new_id("unset")).completed()

    with shared_api.records_nothing():
        response = send(shared_api, payload)

    shared_api.problem(response, 404, "not-found")
