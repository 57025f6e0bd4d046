"""Stripe deliveries read into ledger commands, and the catalogue they buy
from, without a database: signatures checked as Stripe makes them, events of
the real shape (as the `stripe` package parses them) read field by field."""

from __future__ import annotations

import time
import tomllib
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe

from api.integrations import catalog
from api.integrations.catalog import CatalogError
from api.integrations.stripe import InvalidPayload, InvalidSignature, StripeWebhook
from ledger.commands import NO_USER, ApplyStripeEvent, Paid, Unused
from ledger.domain.purchases import DisputeReinstated, DisputeWithdrawn, Offer, Refunds
from tests.stripe_events import CATALOG_TOML, OLD_SECRET, SECRET, Payment, event, parsed, signed

WEBHOOK = StripeWebhook((SECRET, OLD_SECRET), catalog.parse(tomllib.loads(CATALOG_TOML)))


def read(payload: dict[str, Any]) -> ApplyStripeEvent:
    return WEBHOOK.read(parsed(payload).to_dict())


def now() -> datetime:
    return datetime.now(UTC)


# -- the events ----------------------------------------------------------------------


def test_the_payloads_are_events_the_stripe_package_reads() -> None:
    payment = Payment("ann")

    found = parsed(payment.completed())

    assert isinstance(found, stripe.Event)
    assert found.type == "checkout.session.completed"
    assert found.data.object["client_reference_id"] == "ann"


def test_a_paid_session_is_a_purchase_of_its_sku_by_its_client_reference() -> None:
    payment = Payment("ann")

    command = read(payment.completed())

    assert command.user_id == "ann"
    assert command.delivery.object_id == payment.session_id
    assert command.delivery.payment_intent == payment.payment_intent
    assert command.fact == Paid(
        payment.session_id, "credits_100", WEBHOOK.catalog["credits_100"], 900, "usd"
    )


def test_an_unpaid_session_is_ignored_and_its_async_success_is_a_purchase() -> None:
    payment = Payment("ann")

    unpaid = read(payment.completed(payment_status="unpaid"))
    succeeded = read(payment.async_succeeded())

    assert isinstance(unpaid.fact, Unused) and unpaid.fact.outcome == "ignored"
    assert isinstance(succeeded.fact, Paid)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"client_reference_id": None}, "client_reference_id"),
        ({"client_reference_id": "not a user id!"}, "client_reference_id"),
        ({"metadata": {}}, "ledger_sku"),
        ({"mode": "subscription"}, "one-time"),
    ],
)
def test_a_session_the_ledger_cannot_fulfil_is_rejected(change: dict[str, Any], why: str) -> None:
    completed = Payment("ann").completed()
    completed["data"]["object"].update(change)

    command = read(completed)

    assert isinstance(command.fact, Unused)
    assert command.fact.outcome == "rejected" and why in command.fact.reason


def test_refunds_are_read_by_id_and_a_charge_by_its_listed_refunds_and_its_total() -> None:
    payment = Payment("ann")

    created = read(payment.refund("re_1", 300))
    pending = read(payment.refund("re_2", 300, status="pending"))
    listed = read(payment.charge_refunded(600, [("re_1", 300), ("re_2", 300)]))
    unlisted = read(payment.charge_refunded(600))

    assert (created.user_id, created.delivery.payment_intent) == (NO_USER, payment.payment_intent)
    assert created.fact == Refunds((("re_1", 300),), None, "usd")
    assert isinstance(pending.fact, Unused) and pending.fact.outcome == "ignored"
    assert listed.fact == Refunds((("re_1", 300), ("re_2", 300)), 600, "usd")
    assert unlisted.fact == Refunds((), 600, "usd")


def test_a_dispute_withdrawn_and_reinstated() -> None:
    payment = Payment("ann")

    assert read(payment.withdrawn("du_1")).fact == DisputeWithdrawn("du_1", 900)
    assert read(payment.reinstated("du_1")).fact == DisputeReinstated("du_1", 900)


def test_an_event_of_another_type_is_ignored() -> None:
    command = read(event("invoice.paid", {"id": "in_1", "object": "invoice"}))

    assert command.fact == Unused("ignored", "the ledger does not act on invoice.paid")
    assert command.delivery.object_id == "in_1"


@pytest.mark.parametrize(
    "change",
    [
        {"amount_total": "900"},
        {"amount_total": 10**13},
        {"amount_total": -1},
        {"id": "cs_\x00"},
        {"object": "charge"},
        {"currency": "us\x00"},
    ],
)
def test_a_session_of_another_shape_is_an_invalid_payload(change: dict[str, Any]) -> None:
    completed = Payment("ann").completed()
    completed["data"]["object"].update(change)

    with pytest.raises(InvalidPayload):
        WEBHOOK.read(completed)


# -- signatures -------------------------------------------------------------------------


def test_a_delivery_signed_with_either_secret_within_the_tolerance_is_read() -> None:
    payload = Payment("ann").completed()
    for secret in (SECRET, OLD_SECRET):
        for skew in (-299, 0, 299):
            text, header = signed(payload, secret, at=int(time.time()) + skew)
            assert WEBHOOK.verify(text.encode(), header, now())["id"] == payload["id"]


@pytest.mark.parametrize("skew", [-301, 301])
def test_a_signature_more_than_300_s_away_is_refused(skew: int) -> None:
    text, header = signed(Payment("ann").completed(), at=int(time.time()) + skew)

    with pytest.raises(InvalidSignature):
        WEBHOOK.verify(text.encode(), header, now())


@pytest.mark.parametrize(
    "header", [None, "", "t=1", "v1=abc", "t=,v1=abc", "t=1=2,v1=abc", "garbage"]
)
def test_a_missing_or_malformed_signature_is_refused(header: str | None) -> None:
    with pytest.raises(InvalidSignature):
        WEBHOOK.verify(b"{}", header, now())


def test_a_body_that_is_not_utf8_is_refused_as_unsigned() -> None:
    _, header = signed("{}")

    with pytest.raises(InvalidSignature):
        WEBHOOK.verify(b"\xff\xfe{}", header, now())


@pytest.mark.parametrize("body", ["not json", "[1]", "[" * 50_000 + "]" * 50_000, '"event"'])
def test_a_signed_body_that_is_not_an_event_is_an_invalid_payload(body: str) -> None:
    text, header = signed(body)

    with pytest.raises(InvalidPayload):
        WEBHOOK.verify(text.encode(), header, now())


# -- the catalogue -------------------------------------------------------------------------


def test_the_contracts_catalogue_reads_as_offers() -> None:
    found = catalog.parse(tomllib.loads(CATALOG_TOML))

    assert found["lifetime"] == Offer(
        "lifetime", 4900, "usd", credits=500, level="paid", renewal_period="lifetime"
    )
    assert found["credits_100"] == Offer(
        "credits_100", 900, "usd", credits=100, priority=60, credits_expire_after_days=365
    )


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ('[sku.a]\namount = 0\ncurrency = "usd"\ncredits = 1', "sku.a: amount"),
        ('[sku.a]\namount = 9.5\ncurrency = "usd"\ncredits = 1', "sku.a: amount"),
        ('[sku.a]\ncurrency = "usd"\ncredits = 1', "sku.a: amount: is required"),
        ('[sku.a]\namount = 9\ncurrency = "USD"\ncredits = 1', "sku.a: currency"),
        ('[sku.a]\namount = 9\ncurrency = "usd"\ncredits = 1000001', "sku.a: credits"),
        ('[sku.a]\namount = 9\ncurrency = "usd"\ncredits = 1\npriority = 101', "sku.a: priority"),
        (
            '[sku.a]\namount = 9\ncurrency = "usd"\ncredits = 1\ncredits_expire_after_days = 0',
            "sku.a: credits_expire_after_days",
        ),
        ('[sku.a]\namount = 9\ncurrency = "usd"', "sku.a: buys nothing"),
        (
            '[sku.a]\namount = 9\ncurrency = "usd"\nplan = { level = "free" }',
            "sku.a: plan.level",
        ),
        (
            '[sku.a]\namount = 9\ncurrency = "usd"\nplan = { level = "paid", '
            'renewal_period = "monthly" }',
            "sku.a: plan.renewal_period",
        ),
        ('[sku.a]\namount = 9\ncurrency = "usd"\ncredits = 1\ncolour = "red"', "sku.a: colour"),
        ('[sku."a b"]\namount = 9\ncurrency = "usd"\ncredits = 1', "sku.a b"),
        ("[products.a]\namount = 9", "unknown table 'products'"),
    ],
)
def test_a_catalogue_mistake_is_named_by_its_sku_and_field(toml: str, named: str) -> None:
    with pytest.raises(CatalogError) as refused:
        catalog.parse(tomllib.loads(toml))

    assert named in str(refused.value)


def test_a_catalogue_file_that_is_not_toml_says_so(tmp_path: Any) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text("[sku.a\namount = ")

    with pytest.raises(CatalogError, match="is not TOML"):
        catalog.load(path)
