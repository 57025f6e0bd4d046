"""Purchases: what a SKU of the catalogue buys (`Offer`), a purchase as the
user's state keeps it (`Purchase`), and what a payment provider says happened
to one (`Refunds`, `DisputeWithdrawn`, `DisputeReinstated`).

One rule decides what a purchase's refunds and disputes take back: its
**target**, the share of its credits that is no longer paid for. That is all
of them while a dispute has withdrawn the funds, else the refunded share of
the price (rounded down). Each change of the target claims the difference
from the purchase's grant (what remains, then what its holds hold; what it no
longer has is a shortfall), or, when a reinstated dispute lowers the target,
gives back what was taken beyond it. Refunds and disputes of one payment so
never take the same credits twice, in whatever order they arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from ledger.domain.grants import DEFAULT_PRIORITY

#: The largest price or refund the ledger counts, in a currency's smallest unit.
MAX_MONEY = 10**12


class DisputeStatus(StrEnum):
    WITHDRAWN = "withdrawn"  # the funds were taken from the merchant
    REINSTATED = "reinstated"  # and given back (a dispute won)


class Offer(NamedTuple):
    """What a SKU buys, and for how much (in the currency's smallest unit)."""

    sku: str
    amount: int
    currency: str
    credits: int = 0
    level: str | None = None
    renewal_period: str | None = None
    priority: int = DEFAULT_PRIORITY
    credits_expire_after_days: int | None = None


class Purchase(NamedTuple):
    """A purchase, as the events of its payment left it."""

    id: str  # the provider's id of the payment's session (cs_...)
    sku: str
    amount: int
    currency: str
    payment_intent: str | None
    credits: int
    grant_id: str | None
    level: str | None
    renewal_period: str | None
    #: Money counted as refunded: the most that any delivery said.
    refunded: int = 0
    #: The sum of the refunds counted by their id.
    named_refunded: int = 0
    refund_ids: tuple[str, ...] = ()
    #: Credits taken back (or owed by holds) so far.
    taken: int = 0
    dispute_id: str | None = None
    dispute_status: str | None = None

    @property
    def disputed(self) -> bool:
        """Whether a dispute has withdrawn the funds (and not given them back)."""
        return self.dispute_status == DisputeStatus.WITHDRAWN

    @property
    def in_force(self) -> bool:
        """Still paid for: neither refunded in full nor disputed."""
        return not self.disputed and self.refunded < self.amount

    @property
    def target(self) -> int:
        """The credits no longer paid for (see the module's docstring)."""
        if self.disputed:
            return self.credits
        return self.credits * min(self.refunded, self.amount) // self.amount

    def has_plan(self) -> bool:
        return self.level is not None


@dataclass(frozen=True, slots=True)
class Refunds:
    """Refunds of a payment: each by its id and amount (`named`), and what the
    charge says was refunded in all, if it says (`amount_refunded`). A refund
    is counted once by its id; the total only ever raises what is counted."""

    named: tuple[tuple[str, int], ...] = ()
    amount_refunded: int | None = None
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class DisputeWithdrawn:
    """A dispute took the payment's funds: it acts as a full refund."""

    dispute_id: str
    amount: int


@dataclass(frozen=True, slots=True)
class DisputeReinstated:
    """A dispute gave the funds back: what it took comes back too."""

    dispute_id: str
    amount: int


#: What can happen to a purchase after it is paid.
Change = Refunds | DisputeWithdrawn | DisputeReinstated
CHANGES = (Refunds, DisputeWithdrawn, DisputeReinstated)
