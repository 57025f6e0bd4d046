"""However Stripe delivers one purchase's events (in any order, each any
number of times), the ledger ends in the same place: the property, on real
PostgreSQL, through the writer."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.domain import UserState
from projections.log import EventLog
from tests.helpers import BackgroundWriter, rows
from tests.integration.test_stripe_purchases import REGISTERED_CREDITS, deliver, state
from tests.stripe_events import Payment, new_id

#: The events of one purchase of 100 credits for 900: its two fulfilling
#: events, two refunds (300, then 150) each brought by two events, a charge
#: that lists none of its refunds, and a dispute withdrawn then won.
STORY = [
    "completed",
    "async_succeeded",
    "refund_1_created",
    "charge_refunded_1_listed",
    "refund_2_updated",
    "charge_refunded_2_unlisted",
    "dispute_withdrawn",
    "dispute_reinstated",
]


def story(payment: Payment) -> dict[str, dict[str, Any]]:
    first, second, dispute = new_id("re"), new_id("re"), new_id("du")
    return {
        "completed": payment.completed(),
        "async_succeeded": payment.async_succeeded(),
        "refund_1_created": payment.refund(first, 300),
        "charge_refunded_1_listed": payment.charge_refunded(300, [(first, 300)]),
        "refund_2_updated": payment.refund(second, 150, "refund.updated"),
        "charge_refunded_2_unlisted": payment.charge_refunded(450),
        "dispute_withdrawn": payment.withdrawn(dispute),
        "dispute_reinstated": payment.reinstated(dispute),
    }


def outcome(user: UserState) -> tuple[Any, ...]:
    """Balances, plan, and what the purchase counts as refunded and taken back."""
    (purchase,) = user.purchases
    return (
        user.free_credits,
        user.level,
        purchase.refunded,
        purchase.taken,
        len(purchase.refund_ids),
    )


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(order=st.permutations(STORY), repeats=st.lists(st.sampled_from(STORY), max_size=6))
def test_every_order_and_repetition_of_a_purchases_events_ends_the_same(
    writer: BackgroundWriter, log: EventLog, database: Any, order: list[str], repeats: list[str]
) -> None:
    payment = Payment(new_id("user"))
    events = story(payment)
    sent = [*order, *repeats]

    for name in sent:
        deliver(writer, events[name])

    user = state(log, payment.user_id)
    # Half the price refunded, by two refunds: half the credits back; the dispute was won.
    assert outcome(user) == (REGISTERED_CREDITS + 50, "free", 450, 50, 2)
    statuses = rows(
        database,
        "SELECT status, count(*) FROM ledger_stripe_events WHERE payment_intent = %s "
        "GROUP BY status",
        (payment.payment_intent,),
    )
    assert "waiting" not in dict(statuses)
    assert sum(count for _, count in statuses) == len(STORY)
