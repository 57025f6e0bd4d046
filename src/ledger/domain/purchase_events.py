"""Events of a purchase: completed, then refunded, disputed, reinstated.

The credits and the plan a purchase brings are recorded beside it, as a
`CreditsGranted` (source `purchase`) and a `PlanChanged`; these events keep
the purchase itself, and take back (or give back) what its refunds and
disputes decide, out of its grant.
"""

from __future__ import annotations

from typing import Any

from ledger.domain import grants as lots
from ledger.domain.balance import Balance
from ledger.domain.events import UserEvent
from ledger.domain.grants import Grant
from ledger.domain.purchases import DisputeStatus, Purchase
from ledger.domain.state import UserState


class PurchaseCompleted(UserEvent):
    """A payment for `sku` went through: `credits` come as the grant `grant_id`
    (none without credits), and the plan `level`, if any, beside it."""

    purchase_id: str
    sku: str
    amount: int
    currency: str
    payment_intent: str | None
    credits: int
    grant_id: str | None
    level: str | None
    renewal_period: str | None

    def evolve(self, state: UserState | None) -> UserState:
        before = self._check_follows(state)
        if before.purchase(self.purchase_id) is not None:
            raise self._violation(f"completes {self.purchase_id}, which is completed already")
        if (
            self.amount <= 0
            or self.credits < 0
            or (self.credits > 0) != (self.grant_id is not None)
        ):
            raise self._violation(f"completes {self.purchase_id} with {self.data}")
        purchase = Purchase(
            id=self.purchase_id,
            sku=self.sku,
            amount=self.amount,
            currency=self.currency,
            payment_intent=self.payment_intent,
            credits=self.credits,
            grant_id=self.grant_id,
            level=self.level,
            renewal_period=self.renewal_period,
        )
        return self._next(before, purchases=(*before.purchases, purchase))

    @property
    def data(self) -> dict[str, Any]:
        return {
            "purchase_id": self.purchase_id,
            "sku": self.sku,
            "amount": self.amount,
            "currency": self.currency,
            "payment_intent": self.payment_intent,
            "credits": self.credits,
            "grant_id": self.grant_id,
            "level": self.level,
            "renewal_period": self.renewal_period,
        }


class _OfPurchase(UserEvent):
    """An event that changes a purchase, and takes back from its grant
    `clawed_back` credits: at once, but for `owed` of them, taken as the
    grant's holds give them back."""

    purchase_id: str

    def _purchase(self, state: UserState) -> Purchase:
        purchase = state.purchase(self.purchase_id)
        if purchase is None:
            raise self._violation(f"names {self.purchase_id}, which is not completed")
        return purchase

    def _claw(
        self, state: UserState, purchase: Purchase, clawed_back: int, owed: int
    ) -> tuple[Grant, ...]:
        """The grants, with `clawed_back` taken back from the purchase's."""
        if not 0 <= owed <= clawed_back:
            raise self._violation(f"claws {clawed_back} back, {owed} of it owed")
        if not clawed_back:
            return state.grants
        if purchase.grant_id is None:
            raise self._violation(
                f"claws {clawed_back} back from {self.purchase_id}, which has none"
            )
        try:
            return lots.claw_back(state.grants, purchase.grant_id, clawed_back - owed, owed)
        except ValueError as e:
            raise self._violation(str(e)) from e

    def _changed(self, before: UserState, purchase: Purchase, **changes: Any) -> UserState:
        """`before` with `purchase` in place of its earlier self, and `changes`,
        at this event."""
        purchases = tuple(purchase if p.id == purchase.id else p for p in before.purchases)
        return self._settled(before, purchases=purchases, **changes)

    def touched_grants(self, after: UserState) -> tuple[str, ...]:
        purchase = after.purchase(self.purchase_id)
        return () if purchase is None or purchase.grant_id is None else (purchase.grant_id,)


class PurchaseRefunded(_OfPurchase):
    """A refund of `amount` (its id `refund_id`; None for a part of a charge's
    refunded total that no refund named yet). `refunded_total` is what is
    counted as refunded of the purchase after it; `clawed_back` and
    `shortfall` are the credits it took back and those it could not."""

    refund_id: str | None
    amount: int
    refunded_total: int
    clawed_back: int
    owed: int
    shortfall: int

    def evolve(self, state: UserState | None) -> UserState:
        before = self._check_follows(state)
        purchase = self._purchase(before)
        if self.refund_id is not None and self.refund_id in purchase.refund_ids:
            raise self._violation(f"counts {self.refund_id} again")
        if self.amount <= 0 or self.refunded_total < purchase.refunded or self.shortfall < 0:
            raise self._violation(f"refunds {self.data} of {purchase}")
        changed = purchase._replace(
            refunded=self.refunded_total, taken=purchase.taken + self.clawed_back
        )
        if self.refund_id is not None:
            changed = changed._replace(
                named_refunded=purchase.named_refunded + self.amount,
                refund_ids=(*purchase.refund_ids, self.refund_id),
            )
        grants = self._claw(before, purchase, self.clawed_back, self.owed)
        return self._changed(before, changed, grants=grants)

    @property
    def data(self) -> dict[str, Any]:
        return {
            "refund_id": self.refund_id,
            "purchase_id": self.purchase_id,
            "amount": self.amount,
            "refunded_total": self.refunded_total,
            "clawed_back": self.clawed_back,
            "owed": self.owed,
            "shortfall": self.shortfall,
        }


class PurchaseDisputed(_OfPurchase):
    """A dispute (`dispute_id`) withdrew the payment's funds (`amount`): a full
    refund, less what refunds took already."""

    dispute_id: str
    amount: int
    clawed_back: int
    owed: int
    shortfall: int

    def evolve(self, state: UserState | None) -> UserState:
        before = self._check_follows(state)
        purchase = self._purchase(before)
        if purchase.dispute_status is not None or self.shortfall < 0:
            raise self._violation(f"disputes {purchase}")
        changed = purchase._replace(
            dispute_id=self.dispute_id,
            dispute_status=DisputeStatus.WITHDRAWN.value,
            taken=purchase.taken + self.clawed_back,
        )
        grants = self._claw(before, purchase, self.clawed_back, self.owed)
        return self._changed(before, changed, grants=grants)

    @property
    def data(self) -> dict[str, Any]:
        return {
            "dispute_id": self.dispute_id,
            "purchase_id": self.purchase_id,
            "amount": self.amount,
            "clawed_back": self.clawed_back,
            "owed": self.owed,
            "shortfall": self.shortfall,
        }


class DisputeReinstated(_OfPurchase):
    """A dispute gave the funds back: `given_back` credits return to the
    purchase's grant (what it still owed is forgiven first; what returns past
    the grant's expiry expires at once). A dispute reinstated before its
    withdrawal arrived gives nothing back, and the withdrawal is then ignored."""

    dispute_id: str
    amount: int
    given_back: int

    def evolve(self, state: UserState | None) -> UserState:
        before = self._check_follows(state)
        purchase = self._purchase(before)
        if purchase.dispute_status == DisputeStatus.REINSTATED:
            raise self._violation(f"reinstates {purchase}, reinstated already")
        if not 0 <= self.given_back <= purchase.taken:
            raise self._violation(f"gives {self.given_back} back of {purchase}")
        changed = purchase._replace(
            dispute_id=self.dispute_id,
            dispute_status=DisputeStatus.REINSTATED.value,
            taken=purchase.taken - self.given_back,
        )
        if not self.given_back:
            return self._changed(before, changed)
        if purchase.grant_id is None:
            raise self._violation(f"gives back to {self.purchase_id}, which has no grant")
        try:
            grants, expired = lots.give_back_clawed(
                before.grants, purchase.grant_id, self.given_back, self.timestamp
            )
        except ValueError as e:
            raise self._violation(str(e)) from e
        total = Balance.CREDITS.expired_total
        return self._changed(
            before, changed, grants=grants, **{total: before.total(total) + expired}
        )

    @property
    def data(self) -> dict[str, Any]:
        return {
            "dispute_id": self.dispute_id,
            "purchase_id": self.purchase_id,
            "amount": self.amount,
            "given_back": self.given_back,
        }
