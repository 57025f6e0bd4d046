"""Stripe's events through the ledger's writer, on real PostgreSQL: each one
read as Stripe sends it (parsed by the `stripe` package), turned into its
command and committed with the record of its delivery. Purchases, refunds and
disputes, each applied once whichever event brings it, in whatever order."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from api.integrations import catalog
from api.integrations.stripe import StripeWebhook
from ledger.commands import PlaceHold, SettleHold, SpendCredits
from ledger.domain import Balance, Cause, UserState, fold
from ledger.errors import AlreadyReceived, NotApplied
from projections.log import EventLog
from tests.helpers import BackgroundWriter, rows
from tests.stripe_events import CATALOG_TOML, SECRET, Payment, new_id, parsed

WEBHOOK = StripeWebhook((SECRET,), catalog.parse(tomllib.loads(CATALOG_TOML)))
WEBHOOK_CAUSE = Cause("service", "key_test", "req_test", None)
REGISTERED_CREDITS = 10


def deliver(writer: BackgroundWriter, payload: dict[str, Any]) -> str:
    """Send one event as the webhook does; what became of it."""
    command = WEBHOOK.read(parsed(payload).to_dict())
    try:
        writer.execute(command, command.delivery.cause())
    except NotApplied as e:
        return e.outcome
    except AlreadyReceived:
        return "duplicate"
    return "applied"


def state(log: EventLog, user_id: str) -> UserState:
    folded = fold(r.event for r in log.user_events(user_id))
    assert folded is not None
    return folded


def types(log: EventLog, user_id: str) -> list[str]:
    return [type(r.event).__name__ for r in log.user_events(user_id)]


def recorded(database: Any, event_id: str) -> tuple[str, str | None, str | None]:
    (row,) = rows(
        database,
        "SELECT status, error, user_id FROM ledger_stripe_events WHERE event_id = %s",
        (event_id,),
    )
    return row[0], row[1], row[2]


def test_a_credit_pack_bought_by_a_new_user_registers_them_and_grants_the_pack(
    writer: BackgroundWriter, log: EventLog, database: Any
) -> None:
    payment = Payment(new_id("user"))
    completed = payment.completed()

    assert deliver(writer, completed) == "applied"

    user = state(log, payment.user_id)
    assert types(log, payment.user_id) == ["UserRegistered", "PurchaseCompleted", "CreditsGranted"]
    assert user.free_credits == REGISTERED_CREDITS + 100
    (purchase,) = user.purchases
    assert (purchase.id, purchase.sku, purchase.payment_intent) == (
        payment.session_id,
        "credits_100",
        payment.payment_intent,
    )
    grant = user.grant(purchase.grant_id or "")
    assert grant is not None
    assert (grant.source, grant.priority, grant.amount) == ("purchase", 60, 100)
    assert grant.expires_at is not None
    assert recorded(database, completed["id"]) == ("applied", None, payment.user_id)
    causes = [r.event.cause or {} for r in log.user_events(payment.user_id)]
    assert {c["stripe_event_id"] for c in causes} == {completed["id"]}
    assert {c["stripe_object_id"] for c in causes} == {payment.session_id}


@pytest.mark.parametrize("again", ["the same event", "another event of the session"])
def test_a_purchase_is_fulfilled_once(writer: BackgroundWriter, log: EventLog, again: str) -> None:
    payment = Payment(new_id("user"))
    first = payment.completed()
    second = first if again == "the same event" else payment.async_succeeded()

    outcomes = [deliver(writer, first), deliver(writer, second)]

    assert outcomes == ["applied", "duplicate" if second is first else "ignored"]
    assert state(log, payment.user_id).free_credits == REGISTERED_CREDITS + 100


def test_a_lifetime_purchase_upgrades_the_plan_and_grants_its_credits(
    writer: BackgroundWriter, log: EventLog
) -> None:
    payment = Payment(new_id("user"), sku="lifetime", amount=4900)

    assert deliver(writer, payment.completed()) == "applied"

    user = state(log, payment.user_id)
    assert (user.level, user.renewal_period) == ("paid", "lifetime")
    assert user.free_credits == REGISTERED_CREDITS + 500
    assert types(log, payment.user_id)[1:] == ["PurchaseCompleted", "CreditsGranted", "PlanChanged"]


def test_a_delayed_payment_is_fulfilled_when_it_succeeds_never_while_unpaid(
    writer: BackgroundWriter, log: EventLog, database: Any
) -> None:
    payment = Payment(new_id("user"))
    unpaid = payment.completed(payment_status="unpaid")

    assert deliver(writer, unpaid) == "ignored"
    assert log.user_events(payment.user_id) == []
    assert recorded(database, unpaid["id"])[0] == "ignored"

    assert deliver(writer, payment.async_succeeded()) == "applied"
    assert state(log, payment.user_id).free_credits == REGISTERED_CREDITS + 100


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"amount": 899}, "899 usd"),
        ({"currency": "eur"}, "900 eur"),
    ],
)
def test_a_payment_that_is_not_the_catalogue_price_is_rejected_and_grants_nothing(
    writer: BackgroundWriter, log: EventLog, database: Any, overrides: dict[str, Any], why: str
) -> None:
    payment = Payment(new_id("user"))
    completed = payment.completed(**overrides)

    assert deliver(writer, completed) == "rejected"

    assert log.user_events(payment.user_id) == []
    status, error, _ = recorded(database, completed["id"])
    assert status == "rejected"
    assert error is not None and why in error and "900 usd" in error


def test_an_unknown_sku_is_rejected(writer: BackgroundWriter, log: EventLog) -> None:
    payment = Payment(new_id("user"), sku="gold_bars")

    assert deliver(writer, payment.completed()) == "rejected"
    assert log.user_events(payment.user_id) == []


def test_partial_then_full_refund_through_refund_and_charge_events_counts_each_refund_once(
    writer: BackgroundWriter, log: EventLog
) -> None:
    payment = Payment(new_id("user"))  # 100 credits for 900
    deliver(writer, payment.completed())
    first, second = new_id("re"), new_id("re")

    outcomes = [
        deliver(writer, payment.refund(first, 300)),  # a third: 33 credits
        deliver(writer, payment.charge_refunded(300, [(first, 300)])),
        deliver(writer, payment.refund(first, 300, "refund.updated")),
        deliver(writer, payment.charge_refunded(900, [(first, 300), (second, 600)])),
        deliver(writer, payment.refund(second, 600)),
    ]

    assert outcomes == ["applied", "ignored", "ignored", "applied", "ignored"]
    user = state(log, payment.user_id)
    assert user.free_credits == REGISTERED_CREDITS
    (purchase,) = user.purchases
    assert (purchase.refunded, purchase.refund_ids, purchase.taken) == (900, (first, second), 100)
    refunds = [r.event for r in log.user_events(payment.user_id)]
    clawed = [e.data["clawed_back"] for e in refunds if type(e).__name__ == "PurchaseRefunded"]
    assert clawed == [33, 67]


def test_a_charge_that_lists_no_refunds_counts_its_total_once_and_the_refund_adds_nothing(
    writer: BackgroundWriter, log: EventLog
) -> None:
    payment = Payment(new_id("user"))
    deliver(writer, payment.completed())
    refund_id = new_id("re")

    outcomes = [
        deliver(writer, payment.charge_refunded(450)),
        deliver(writer, payment.refund(refund_id, 450)),
        deliver(writer, payment.charge_refunded(450)),
    ]

    assert outcomes == ["applied", "applied", "ignored"]
    (purchase,) = state(log, payment.user_id).purchases
    assert (purchase.refunded, purchase.taken) == (450, 50)
    assert state(log, payment.user_id).free_credits == REGISTERED_CREDITS + 50


def test_a_refund_after_the_credits_were_spent_takes_what_is_left_and_records_the_shortfall(
    writer: BackgroundWriter, log: EventLog
) -> None:
    payment = Payment(new_id("user"))
    deliver(writer, payment.completed())
    # The registration's 10 (priority 50) go first, then 95 of the pack's 100 (60).
    writer.execute(SpendCredits(payment.user_id, 105, "images"), WEBHOOK_CAUSE)

    assert deliver(writer, payment.refund(new_id("re"), 900)) == "applied"

    user = state(log, payment.user_id)
    refunded = log.user_events(payment.user_id)[-1].event
    assert (refunded.data["clawed_back"], refunded.data["shortfall"]) == (5, 95)
    assert user.free_credits == 0


def test_a_refund_of_held_credits_takes_them_when_the_hold_gives_them_back(
    writer: BackgroundWriter, log: EventLog
) -> None:
    payment = Payment(new_id("user"))
    deliver(writer, payment.completed())
    writer.execute(SpendCredits(payment.user_id, 10, "first reply"), WEBHOOK_CAUSE)
    hold_id = new_id("hold")
    writer.execute(
        PlaceHold(payment.user_id, Balance.CREDITS, 60, hold_id), WEBHOOK_CAUSE
    )  # 40 left

    assert deliver(writer, payment.refund(new_id("re"), 900)) == "applied"
    refunded = log.user_events(payment.user_id)[-1].event
    assert (refunded.data["clawed_back"], refunded.data["owed"]) == (100, 60)
    assert (
        state(log, payment.user_id).free_credits,
        state(log, payment.user_id).free_credits_held,
    ) == (0, 60)

    writer.execute(SettleHold(payment.user_id, hold_id, 20), WEBHOOK_CAUSE)

    user = state(log, payment.user_id)
    grant = user.grant(user.purchases[0].grant_id or "")
    assert (user.free_credits, user.free_credits_held) == (0, 0)
    assert grant is not None and (grant.spent, grant.clawed_back, grant.owed) == (20, 80, 0)


def test_a_refund_before_its_purchase_waits_and_is_applied_when_the_purchase_arrives(
    writer: BackgroundWriter, log: EventLog, database: Any
) -> None:
    payment = Payment(new_id("user"))
    early = payment.refund(new_id("re"), 450)

    assert deliver(writer, early) == "waiting"
    status, error, user_id = recorded(database, early["id"])
    assert (status, user_id) == ("waiting", None)
    assert error is not None and payment.payment_intent in error
    assert deliver(writer, early) == "duplicate"

    assert deliver(writer, payment.completed()) == "applied"

    assert state(log, payment.user_id).free_credits == REGISTERED_CREDITS + 50
    assert recorded(database, early["id"]) == ("applied", None, payment.user_id)
    assert types(log, payment.user_id)[-1] == "PurchaseRefunded"
    assert deliver(writer, payment.refund(str(early["data"]["object"]["id"]), 450)) == "ignored"


def test_what_waits_twice_for_one_refund_is_applied_once_and_the_rest_ignored(
    writer: BackgroundWriter, log: EventLog, database: Any
) -> None:
    payment = Payment(new_id("user"))
    refund_id = new_id("re")
    created = payment.refund(refund_id, 900)
    listed = payment.charge_refunded(900, [(refund_id, 900)])
    assert [deliver(writer, created), deliver(writer, listed)] == ["waiting", "waiting"]

    deliver(writer, payment.completed())

    assert state(log, payment.user_id).free_credits == REGISTERED_CREDITS
    assert recorded(database, created["id"])[0] == "applied"
    assert recorded(database, listed["id"])[0] == "ignored"


def test_a_dispute_takes_everything_back_and_its_reinstatement_gives_it_back(
    writer: BackgroundWriter, log: EventLog
) -> None:
    payment = Payment(new_id("user"), sku="lifetime", amount=4900)
    deliver(writer, payment.completed())
    dispute_id = new_id("du")

    assert deliver(writer, payment.withdrawn(dispute_id)) == "applied"
    user = state(log, payment.user_id)
    assert (user.free_credits, user.level, user.renewal_period) == (
        REGISTERED_CREDITS,
        "free",
        None,
    )

    assert deliver(writer, payment.reinstated(dispute_id)) == "applied"
    user = state(log, payment.user_id)
    assert (user.free_credits, user.level) == (REGISTERED_CREDITS + 500, "paid")
    assert deliver(writer, payment.withdrawn(dispute_id)) == "ignored"
    assert types(log, payment.user_id)[-4:] == [
        "PurchaseDisputed",
        "PlanChanged",
        "DisputeReinstated",
        "PlanChanged",
    ]


def test_a_dispute_after_a_refund_takes_only_what_the_refund_left(
    writer: BackgroundWriter, log: EventLog
) -> None:
    payment = Payment(new_id("user"))
    deliver(writer, payment.completed())
    deliver(writer, payment.refund(new_id("re"), 450))  # 50 back
    dispute_id = new_id("du")

    deliver(writer, payment.withdrawn(dispute_id))
    disputed = log.user_events(payment.user_id)[-1].event
    deliver(writer, payment.refund(new_id("re"), 450))  # nothing more to take

    assert disputed.data["clawed_back"] == 50
    assert state(log, payment.user_id).free_credits == REGISTERED_CREDITS
    (purchase,) = state(log, payment.user_id).purchases
    assert purchase.taken == 100

    deliver(writer, payment.reinstated(dispute_id))  # both refunds stand: nothing comes back
    assert state(log, payment.user_id).free_credits == REGISTERED_CREDITS


def test_a_full_refund_of_a_plan_purchase_returns_the_user_to_free(
    writer: BackgroundWriter, log: EventLog
) -> None:
    payment = Payment(new_id("user"), sku="plan_only", amount=2900)
    deliver(writer, payment.completed())
    deliver(writer, payment.refund(new_id("re"), 1000))
    assert state(log, payment.user_id).level == "paid"

    deliver(writer, payment.refund(new_id("re"), 1900))

    user = state(log, payment.user_id)
    assert (user.level, user.renewal_period) == ("free", None)
