"""A user's state, as the one fold of their events leaves it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from ledger.domain.allowances import Allowance
from ledger.domain.balance import BALANCES, Balance
from ledger.domain.grants import NOTHING_EXPIRING, Expiring, Grant, kept
from ledger.domain.holds import Hold
from ledger.domain.purchases import Purchase

#: Changes whenever the fold (an event's `evolve`, or an upcaster) does:
#: snapshots of the state made by another fold are then ignored (see ledger.snapshots).
FOLD_VERSION = 3


class InvariantViolation(Exception):
    """An event cannot follow the state it is applied to. Never happens to events
    recorded by this code; a projector that meets one stops instead of guessing."""


@dataclass(frozen=True, slots=True)
class Cause:
    """Who and what caused an event: never a secret, only its id."""

    actor_role: str | None = None
    actor_key_id: str | None = None
    request_id: str | None = None
    idempotency_key: str | None = None
    #: The Stripe event that caused it, and the object it is about (cs_, re_, du_...).
    stripe_event_id: str | None = None
    stripe_object_id: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        cause = {
            "actor_role": self.actor_role,
            "actor_key_id": self.actor_key_id,
            "request_id": self.request_id,
            "idempotency_key": self.idempotency_key,
        }
        if self.stripe_event_id is not None:
            cause["stripe_event_id"] = self.stripe_event_id
            cause["stripe_object_id"] = self.stripe_object_id
        return cause


class UserState(NamedTuple):
    """A user as history leaves them.

    `free_credits` and `free_chat_messages` are what is available: granted,
    less spent, expired and held (None for a balance imported from before the
    credit columns, until its first grant). The grants are its lots, the holds
    its open holds; an item closed by the latest event stays until the next, so
    that whoever applies an event can see how it left it. The totals count
    every grant (opening balances apart), spend and expiry ever recorded. The
    grants are kept in the consumption order (ledger.domain.grants.order). The
    purchases are every one the user made, with their refunds and disputes.
    (A named tuple: the fold makes one per event, with `changed`.)"""

    id: str
    level: str
    renewal_period: str | None
    free_credits: int | None
    free_chat_messages: int | None
    version: int
    updated_at: datetime
    credits_granted_total: int = 0
    credits_spent_total: int = 0
    chat_messages_granted_total: int = 0
    chat_messages_spent_total: int = 0
    credits_expired_total: int = 0
    chat_messages_expired_total: int = 0
    free_credits_held: int = 0
    free_chat_messages_held: int = 0
    grants: tuple[Grant, ...] = ()
    holds: tuple[Hold, ...] = ()
    allowances: tuple[Allowance, ...] = ()
    purchases: tuple[Purchase, ...] = ()
    #: Each balance's next expiry (when, how much), in BALANCES' order: summed
    #: with the balances by the fold, from the grants (never stored: ledger.codec).
    expiring: Expiring = NOTHING_EXPIRING

    def changed(self, changes: dict[str, Any]) -> UserState:
        """`_replace`, in half its time: the fold makes one per event."""
        values = list(self)
        for name, value in changes.items():
            values[_PLACES[name]] = value
        return tuple.__new__(UserState, values)

    # -- by balance ---------------------------------------------------------

    def balance(self, kind: Balance) -> int | None:
        value: int | None = getattr(self, kind.value)
        return value

    def held(self, kind: Balance) -> int:
        value: int = getattr(self, kind.held)
        return value

    def total(self, name: str) -> int:
        value: int = getattr(self, name)
        return value

    def grant(self, grant_id: str) -> Grant | None:
        return next((g for g in self.grants if g.id == grant_id), None)

    def hold(self, hold_id: str) -> Hold | None:
        return next((h for h in self.holds if h.id == hold_id), None)

    def allowance(self, kind: Balance) -> Allowance | None:
        return next((a for a in self.allowances if a.balance is kind), None)

    def purchase(self, purchase_id: str) -> Purchase | None:
        return next((p for p in self.purchases if p.id == purchase_id), None)

    def paid_by(self, payment_intent: str) -> Purchase | None:
        """The purchase paid with `payment_intent`, if any."""
        return next((p for p in self.purchases if p.payment_intent == payment_intent), None)

    def open_holds(self, kind: Balance | None = None) -> list[Hold]:
        return [h for h in self.holds if h.is_open and (kind is None or h.balance is kind)]

    def pruned(self) -> UserState:
        """Without the grants used up or expired (but those a dispute may give
        back to) and the holds closed (by the event before): what the next
        event starts from. (One pass over each; lists, quicker to build than
        from generators, as every event of the fold starts here.)"""
        grants = kept(self.grants)
        holds = tuple([h for h in self.holds if h.is_open])
        if len(grants) == len(self.grants) and len(holds) == len(self.holds):
            return self
        return self.changed({"grants": grants, "holds": holds})

    # -- what the users table shows besides ------------------------------------

    def next_expiry(self, kind: Balance) -> tuple[datetime | None, int | None]:
        """When a remainder of `kind` expires next, and how much then (None, None
        when nothing will)."""
        return self.expiring[_BALANCE_PLACES[kind]]

    @property
    def free_credits_next_expiry_at(self) -> datetime | None:
        return self.next_expiry(Balance.CREDITS)[0]

    @property
    def free_credits_next_expiry_amount(self) -> int | None:
        return self.next_expiry(Balance.CREDITS)[1]

    @property
    def free_chat_messages_next_expiry_at(self) -> datetime | None:
        return self.next_expiry(Balance.CHAT_MESSAGES)[0]

    @property
    def free_chat_messages_next_expiry_amount(self) -> int | None:
        return self.next_expiry(Balance.CHAT_MESSAGES)[1]

    @property
    def next_due_at(self) -> datetime | None:
        """The first instant at which time alone changes this user: a hold or a
        grant expiring, an allowance's next period. (Where the expiry worker
        looks.)"""
        moments = [h.expires_at for h in self.holds if h.is_open]
        moments += [g.expires_at for g in self.grants if g.remaining and g.expires_at]
        moments += [a.period_end or a.anchor for a in self.allowances]
        return min(moments, default=None)


#: Each field's place in a UserState.
_PLACES = {name: place for place, name in enumerate(UserState._fields)}
#: Each balance's place in `UserState.expiring`.
_BALANCE_PLACES = {kind: place for place, kind in enumerate(BALANCES)}
