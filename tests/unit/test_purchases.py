"""Purchases, refunds and disputes in the domain, without a database: what a
refund or a dispute takes back, from where, and what comes back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ledger.commands import ApplyStripeEvent, Context, Delivery, Paid, PlaceHold, ReleaseHold
from ledger.domain import Balance, Cause, User, fold
from ledger.domain.purchases import DisputeReinstated, DisputeWithdrawn, Offer, Refunds
from ledger.errors import Ignored, Rejected, Waiting

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
PACK = Offer("credits_100", 900, "usd", credits=100, priority=60, credits_expire_after_days=30)
PAYMENT = "pi_test_1"


def at(seconds: float) -> Context:
    return Context(Cause("stripe"), T0 + timedelta(seconds=seconds))


def bought(offer: Offer = PACK) -> User:
    paid = Paid("cs_test_1", offer.sku, offer, offer.amount, offer.currency)
    delivery = Delivery("evt_paid", "checkout.session.completed", "cs_test_1", PAYMENT)
    return ApplyStripeEvent("ann", delivery, paid).decide(None, at(0))


def changed(
    user: User, change: Refunds | DisputeWithdrawn | DisputeReinstated, t: float = 1
) -> None:
    delivery = Delivery(f"evt_{t}", "refund.created", "re_x", PAYMENT)
    ApplyStripeEvent("ann", delivery, change).decide(user, at(t))


def refund(refund_id: str, amount: int) -> Refunds:
    return Refunds(((refund_id, amount),))


def test_a_partial_refund_takes_back_the_refunded_share_rounded_down() -> None:
    user = bought()

    changed(user, refund("re_1", 100))  # 100 of 900: 11.1 credits

    assert user.state.free_credits == 10 + 100 - 11
    assert user.state.purchases[0].taken == 11


def test_refunds_that_add_up_to_the_price_take_back_everything_however_they_round() -> None:
    user = bought()

    for n in range(1, 10):
        changed(user, refund(f"re_{n}", 100), t=n)

    assert user.state.free_credits == 10
    assert user.state.purchases[0].taken == 100


def test_a_charges_total_raises_what_is_counted_and_never_adds_to_the_refunds_it_names() -> None:
    user = bought()

    changed(user, Refunds((), amount_refunded=300), t=1)
    changed(user, refund("re_1", 300), t=2)  # the same money, named now
    changed(user, Refunds((("re_1", 300), ("re_2", 300)), amount_refunded=600), t=3)

    (purchase,) = user.state.purchases
    assert (purchase.refunded, purchase.named_refunded, purchase.taken) == (600, 600, 66)
    with pytest.raises(Ignored):
        changed(user, Refunds((("re_2", 300),), amount_refunded=500), t=4)


def test_a_refund_in_another_currency_is_rejected() -> None:
    with pytest.raises(Rejected):
        changed(bought(), Refunds((("re_1", 100),), currency="eur"))


def test_a_refund_of_a_payment_without_a_purchase_waits() -> None:
    user = bought()
    delivery = Delivery("evt_r", "refund.created", "re_1", "pi_other")

    with pytest.raises(Waiting):
        ApplyStripeEvent("ann", delivery, refund("re_1", 900)).decide(user, at(1))


def test_held_credits_are_owed_and_taken_when_their_hold_is_released() -> None:
    user = bought()
    PlaceHold("ann", Balance.CREDITS, 105, "hold_1").decide(user, at(1))  # 10 + 95 of the pack

    changed(user, refund("re_1", 900), t=2)
    grant = user.state.grant(user.state.purchases[0].grant_id or "")
    assert grant is not None and (grant.remaining, grant.held, grant.owed) == (0, 95, 95)
    assert user.state.free_credits == 0

    ReleaseHold("ann", "hold_1").decide(user, at(3))

    grant = user.state.grant(user.state.purchases[0].grant_id or "")
    assert grant is not None and (grant.remaining, grant.clawed_back, grant.owed) == (0, 100, 0)
    assert (user.state.free_credits, user.state.free_credits_held) == (10, 0)


def test_a_dispute_reinstated_gives_back_what_it_took_expiring_past_the_grants_expiry() -> None:
    user = bought()
    changed(user, DisputeWithdrawn("du_1", 900), t=1)
    assert user.state.free_credits == 10

    changed(user, DisputeReinstated("du_1", 900), t=timedelta(days=31).total_seconds())

    grant = user.state.grant(user.state.purchases[0].grant_id or "")
    assert grant is not None and (grant.expired, grant.clawed_back) == (100, 0)
    assert user.state.free_credits == 10
    assert user.state.credits_expired_total == 100


def test_a_dispute_reinstated_before_its_withdrawal_makes_the_withdrawal_ignored() -> None:
    user = bought()

    changed(user, DisputeReinstated("du_1", 900), t=1)

    with pytest.raises(Ignored):
        changed(user, DisputeWithdrawn("du_1", 900), t=2)
    assert user.state.free_credits == 110


def test_a_plan_ends_with_its_full_refund_unless_another_purchase_pays_for_it() -> None:
    lifetime = Offer("lifetime", 4900, "usd", level="paid", renewal_period="lifetime")
    user = bought(lifetime)
    second = Paid("cs_test_2", "lifetime", lifetime, 4900, "usd")
    delivery = Delivery("evt_2", "checkout.session.completed", "cs_test_2", "pi_test_2")
    ApplyStripeEvent("ann", delivery, second).decide(user, at(1))

    changed(user, refund("re_1", 4900), t=2)
    assert user.state.level == "paid"

    delivery = Delivery("evt_3", "refund.created", "re_2", "pi_test_2")
    ApplyStripeEvent("ann", delivery, refund("re_2", 4900)).decide(user, at(3))
    assert (user.state.level, user.state.renewal_period) == ("free", None)


def test_the_fold_of_a_purchases_events_is_the_state_the_commands_left() -> None:
    user = bought()
    changed(user, refund("re_1", 450), t=1)
    changed(user, DisputeWithdrawn("du_1", 900), t=2)
    changed(user, DisputeReinstated("du_1", 900), t=3)

    assert fold(user.collect_events()) == user.state
