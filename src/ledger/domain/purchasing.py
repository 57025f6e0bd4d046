"""The User aggregate's purchases: a part of `User` (ledger.domain.user), in a
module of its own. A payment completed records the purchase, then its grant
and its plan; a refund, a dispute or a reinstatement moves the purchase's
target (ledger.domain.purchases) and takes back, or gives back, the
difference; a purchase that stops being paid for ends its plan, and one paid
for again (a dispute reinstated) brings it back.

Each refusal is raised before anything is recorded: Ignored (nothing new),
Rejected (not the catalogue's price), Waiting (no purchase for that payment yet).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ledger.domain import grants as lots
from ledger.domain import purchase_events
from ledger.domain.balance import Balance
from ledger.domain.grants import Source, derived_id
from ledger.domain.purchases import (
    Change,
    DisputeReinstated,
    DisputeStatus,
    DisputeWithdrawn,
    Offer,
    Purchase,
    Refunds,
)
from ledger.domain.rules import Level, check_can_grant
from ledger.domain.state import Cause, UserState
from ledger.errors import BalanceLimit, Ignored, Rejected, Waiting

if TYPE_CHECKING:
    from ledger.domain.events import UserEvent


class Purchasing:
    """Purchases, refunds and disputes of the user's payments."""

    if TYPE_CHECKING:
        id: str
        state: UserState

        def _record(
            self, event_class: type[UserEvent], cause: Cause, now: datetime, **fields: Any
        ) -> None: ...

        def _moment(self, now: datetime) -> datetime: ...

        def grant(
            self,
            balance: Balance,
            amount: int,
            reason: str | None,
            cause: Cause,
            now: datetime,
            *,
            priority: int = ...,
            expires_at: datetime | None = ...,
            source: Source = ...,
            grant_id: str | None = ...,
        ) -> None: ...

        def change_plan(
            self, level: str, renewal_period: str | None, cause: Cause, now: datetime
        ) -> None: ...

    def complete_purchase(
        self,
        purchase_id: str,
        offer: Offer,
        paid: tuple[int, str],
        payment_intent: str | None,
        cause: Cause,
        now: datetime,
    ) -> None:
        """Fulfil a payment of `paid` (amount, currency) for `offer`."""
        if self.state.purchase(purchase_id) is not None:
            raise Ignored(f"purchase {purchase_id} is applied already")
        if payment_intent is not None and self.state.paid_by(payment_intent) is not None:
            raise Ignored(f"payment {payment_intent} is applied already")
        amount, currency = paid
        if (amount, currency) != (offer.amount, offer.currency):
            raise Rejected(
                f"{purchase_id} paid {amount} {currency}, but {offer.sku} costs "
                f"{offer.amount} {offer.currency}"
            )
        grant_id = derived_id(self.id, "purchase", purchase_id) if offer.credits else None
        if offer.credits:
            kind = Balance.CREDITS
            try:
                check_can_grant(
                    self.state.balance(kind), self.state.held(kind), offer.credits, kind.value
                )
            except BalanceLimit as e:
                raise Rejected(e.detail) from e
        self._record(
            purchase_events.PurchaseCompleted,
            cause,
            now,
            purchase_id=purchase_id,
            sku=offer.sku,
            amount=amount,
            currency=currency,
            payment_intent=payment_intent,
            credits=offer.credits,
            grant_id=grant_id,
            level=offer.level,
            renewal_period=offer.renewal_period,
        )
        if offer.credits:
            days = offer.credits_expire_after_days
            self.grant(
                Balance.CREDITS,
                offer.credits,
                f"purchase of {offer.sku}",
                cause,
                now,
                priority=offer.priority,
                expires_at=self._moment(now) + timedelta(days=days) if days else None,
                source=Source.PURCHASE,
                grant_id=grant_id,
            )
        if offer.level is not None:
            self._plan(offer.level, offer.renewal_period, cause, now)

    def change_purchase(
        self, payment_intent: str, change: Change, cause: Cause, now: datetime
    ) -> None:
        """A refund, a dispute or a reinstatement of the purchase paid with
        `payment_intent`."""
        purchase = self.state.paid_by(payment_intent)
        if purchase is None:
            raise Waiting(f"no purchase was paid with {payment_intent} yet")
        if isinstance(change, Refunds):
            if change.currency is not None and change.currency != purchase.currency:
                raise Rejected(
                    f"a refund in {change.currency} of a purchase in {purchase.currency}"
                )
            self._refund(purchase, change, cause, now)
        elif isinstance(change, DisputeWithdrawn):
            self._dispute(purchase, change, cause, now)
        else:
            self._reinstate(purchase, change, cause, now)
        self._plan_follows(purchase, cause, now)

    # -- what each change records ---------------------------------------------------

    def _refund(self, purchase: Purchase, refunds: Refunds, cause: Cause, now: datetime) -> None:
        recorded = 0
        for refund_id, amount in refunds.named:
            current = self._current(purchase)
            if refund_id in current.refund_ids or amount <= 0:
                continue
            total = max(current.refunded, current.named_refunded + amount)
            self._refunded(current, refund_id, amount, total, _about(cause, refund_id), now)
            recorded += 1
        current = self._current(purchase)
        said = refunds.amount_refunded
        if said is not None and said > current.refunded:
            self._refunded(current, None, said - current.refunded, said, cause, now)
            recorded += 1
        if not recorded:
            raise Ignored(f"the refunds it brings of {purchase.id} are counted already")

    def _refunded(
        self,
        purchase: Purchase,
        refund_id: str | None,
        amount: int,
        total: int,
        cause: Cause,
        now: datetime,
    ) -> None:
        after = purchase._replace(refunded=total)
        taken, owed, short = self._claim(purchase, after.target - purchase.target)
        self._record(
            purchase_events.PurchaseRefunded,
            cause,
            now,
            refund_id=refund_id,
            purchase_id=purchase.id,
            amount=amount,
            refunded_total=total,
            clawed_back=taken + owed,
            owed=owed,
            shortfall=short,
        )

    def _dispute(
        self, purchase: Purchase, dispute: DisputeWithdrawn, cause: Cause, now: datetime
    ) -> None:
        if purchase.dispute_status is not None:
            raise Ignored(
                f"dispute {purchase.dispute_id} of {purchase.id} is {purchase.dispute_status}"
            )
        after = purchase._replace(dispute_status=DisputeStatus.WITHDRAWN.value)
        taken, owed, short = self._claim(purchase, after.target - purchase.target)
        self._record(
            purchase_events.PurchaseDisputed,
            cause,
            now,
            dispute_id=dispute.dispute_id,
            purchase_id=purchase.id,
            amount=dispute.amount,
            clawed_back=taken + owed,
            owed=owed,
            shortfall=short,
        )

    def _reinstate(
        self, purchase: Purchase, dispute: DisputeReinstated, cause: Cause, now: datetime
    ) -> None:
        if purchase.dispute_status == DisputeStatus.REINSTATED:
            raise Ignored(f"dispute {purchase.dispute_id} of {purchase.id} is reinstated already")
        if purchase.dispute_id not in (None, dispute.dispute_id):
            raise Ignored(
                f"{purchase.id} is disputed by {purchase.dispute_id}, not {dispute.dispute_id}"
            )
        after = purchase._replace(dispute_status=DisputeStatus.REINSTATED.value)
        grant = self._grant_of(purchase)
        returnable = 0 if grant is None else grant.owed + grant.clawed_back
        given_back = min(max(0, purchase.taken - after.target), returnable)
        self._record(
            purchase_events.DisputeReinstated,
            cause,
            now,
            dispute_id=dispute.dispute_id,
            purchase_id=purchase.id,
            amount=dispute.amount,
            given_back=given_back,
        )

    # -- the rules they share ---------------------------------------------------------

    def _current(self, purchase: Purchase) -> Purchase:
        current = self.state.purchase(purchase.id)
        assert current is not None
        return current

    def _grant_of(self, purchase: Purchase) -> lots.Grant | None:
        return None if purchase.grant_id is None else self.state.grant(purchase.grant_id)

    def _claim(self, purchase: Purchase, claim: int) -> tuple[int, int, int]:
        """How a claim of `claim` credits back from the purchase's grant is met."""
        return lots.clawback(self._grant_of(purchase), max(0, claim))

    def _plan_follows(self, before: Purchase, cause: Cause, now: datetime) -> None:
        """A plan purchase no longer paid for ends its plan (unless another
        purchase pays for one); paid for again, it brings it back."""
        after = self._current(before)
        if after.level is None or before.in_force == after.in_force:
            return
        if after.in_force:
            self._plan(after.level, after.renewal_period, cause, now)
        elif not any(p.in_force and p.has_plan() for p in self.state.purchases):
            self._plan(Level.FREE.value, None, cause, now)

    def _plan(self, level: str, renewal_period: str | None, cause: Cause, now: datetime) -> None:
        if (self.state.level, self.state.renewal_period) != (level, renewal_period):
            self.change_plan(level, renewal_period, cause, now)


def _about(cause: Cause, object_id: str) -> Cause:
    """`cause`, about another object (a refund that a charge's event names)."""
    return dataclasses.replace(cause, stripe_object_id=object_id)
