"""Commands: what a caller asks of one user's stream, and how each is decided."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from ledger import idempotency
from ledger.domain import (
    DEFAULT_PRIORITY,
    DEFAULT_TTL_SECONDS,
    Balance,
    Cause,
    Hold,
    User,
)
from ledger.domain.purchases import Change, Offer
from ledger.errors import (
    AlreadyReceived,
    Ignored,
    InvalidCommand,
    NotApplied,
    NothingDue,
    Rejected,
    UserExists,
    UserNotFound,
    Waiting,
)

#: The user of a command whose user the writer finds under the lock (a Stripe
#: refund names a payment, not a user): never a user's id.
NO_USER = ""


def _no_hold(user_id: str, hold_id: str) -> Hold | None:
    return None


@dataclass(frozen=True, slots=True)
class Delivery:
    """A Stripe event as received: its id and type, the object it is about
    (cs_, re_, ch_, du_...), and the payment it concerns."""

    event_id: str
    type: str
    object_id: str
    payment_intent: str | None = None

    def cause(self, request_id: str | None = None) -> Cause:
        """Who the events it causes are recorded as caused by."""
        return Cause(
            actor_role="stripe",
            request_id=request_id,
            stripe_event_id=self.event_id,
            stripe_object_id=self.object_id,
        )


@dataclass(frozen=True, slots=True)
class Received:
    """What the writer found under the lock about a Stripe delivery: the same
    event as recorded before (its row, as the API shows it), and for a
    purchase, the deliveries about its payment that were waiting for it."""

    previous: dict[str, Any] | None = None
    waiting: tuple[tuple[Delivery, Change], ...] = ()


@dataclass(frozen=True, slots=True)
class Context:
    """What a command is decided with: who asked, the writer's clock for the
    batch, how a hold that has left the user's state was last recorded, and
    what was received before of a Stripe delivery."""

    cause: Cause
    now: datetime
    recorded_hold: Callable[[str, str], Hold | None] = _no_hold
    received: Received = Received()


@dataclass(frozen=True, slots=True)
class Command:
    user_id: str

    #: Decided in a batch of its own: it reads, under the lock, rows that
    #: another command of the same batch could change (a Stripe delivery).
    alone: ClassVar[bool] = False

    def decide(self, user: User | None, context: Context) -> User:
        """Record this command's events on `user` (created if need be): first
        what time has brought, then its own, the last. Or raise a LedgerError."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Equal for equal commands: how a reused idempotency key is recognised.
        Fields at their defaults are left out, so that a field added by a later
        release leaves the fingerprints of earlier requests as they were."""
        fields = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.default is dataclasses.MISSING or getattr(self, f.name) != f.default
        }
        return idempotency.fingerprint(type(self).__name__, fields)

    @property
    def existing_hold(self) -> str | None:
        """The id of the existing hold the command acts on, if any."""
        return None


def _existing(user: User | None, user_id: str, now: datetime) -> User:
    if user is None:
        raise UserNotFound(f"no user with id {user_id!r}")
    user.catch_up(now)
    return user


@dataclass(frozen=True, slots=True)
class RegisterUser(Command):
    def decide(self, user: User | None, context: Context) -> User:
        if user is not None:
            raise UserExists(f"a user with id {self.user_id!r} exists already")
        return User.register(self.user_id, context.cause, context.now)


@dataclass(frozen=True, slots=True)
class ImportUser(Command):
    level: str
    renewal_period: str | None
    free_credits: int | None
    free_chat_messages: int | None

    def decide(self, user: User | None, context: Context) -> User:
        if user is not None:
            raise UserExists(f"a user with id {self.user_id!r} exists already")
        return User.import_(
            self.user_id,
            self.level,
            self.renewal_period,
            self.free_credits,
            self.free_chat_messages,
            context.cause,
            context.now,
        )


@dataclass(frozen=True, slots=True)
class _BalanceCommand(Command):
    amount: int
    reason: str | None = None

    balance: ClassVar[Balance]


@dataclass(frozen=True, slots=True)
class _Grant(_BalanceCommand):
    priority: int = DEFAULT_PRIORITY
    expires_at: datetime | None = None

    def decide(self, user: User | None, context: Context) -> User:
        user = _existing(user, self.user_id, context.now)
        user.grant(
            self.balance,
            self.amount,
            self.reason,
            context.cause,
            context.now,
            priority=self.priority,
            expires_at=self.expires_at,
        )
        return user


@dataclass(frozen=True, slots=True)
class _Spend(_BalanceCommand):
    def decide(self, user: User | None, context: Context) -> User:
        user = _existing(user, self.user_id, context.now)
        user.spend(self.balance, self.amount, self.reason, context.cause, context.now)
        return user


@dataclass(frozen=True, slots=True)
class GrantCredits(_Grant):
    balance = Balance.CREDITS


@dataclass(frozen=True, slots=True)
class SpendCredits(_Spend):
    balance = Balance.CREDITS


@dataclass(frozen=True, slots=True)
class GrantChatMessages(_Grant):
    balance = Balance.CHAT_MESSAGES


@dataclass(frozen=True, slots=True)
class SpendChatMessages(_Spend):
    balance = Balance.CHAT_MESSAGES


GRANTS: dict[Balance, type[_Grant]] = {
    Balance.CREDITS: GrantCredits,
    Balance.CHAT_MESSAGES: GrantChatMessages,
}
SPENDS: dict[Balance, type[_Spend]] = {
    Balance.CREDITS: SpendCredits,
    Balance.CHAT_MESSAGES: SpendChatMessages,
}


@dataclass(frozen=True, slots=True)
class ChangePlan(Command):
    level: str
    renewal_period: str | None

    def decide(self, user: User | None, context: Context) -> User:
        user = _existing(user, self.user_id, context.now)
        user.change_plan(self.level, self.renewal_period, context.cause, context.now)
        return user


# -- holds -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlaceHold(Command):
    balance: Balance
    amount: int
    hold_id: str
    reason: str | None = None
    ttl_seconds: int = DEFAULT_TTL_SECONDS

    def decide(self, user: User | None, context: Context) -> User:
        user = _existing(user, self.user_id, context.now)
        user.place_hold(
            self.balance,
            self.amount,
            self.reason,
            self.ttl_seconds,
            self.hold_id,
            context.cause,
            context.now,
        )
        return user


@dataclass(frozen=True, slots=True)
class _OnHold(Command):
    hold_id: str

    @property
    def existing_hold(self) -> str | None:
        return self.hold_id

    def _hold(self, user: User, context: Context) -> Hold | None:
        """The hold as the user's state has it, else as last recorded."""
        return user.state.hold(self.hold_id) or context.recorded_hold(self.user_id, self.hold_id)


@dataclass(frozen=True, slots=True)
class SettleHold(_OnHold):
    amount: int = 0
    reason: str | None = None

    def decide(self, user: User | None, context: Context) -> User:
        user = _existing(user, self.user_id, context.now)
        hold = self._hold(user, context)
        user.settle_hold(hold, self.hold_id, self.amount, self.reason, context.cause, context.now)
        return user


@dataclass(frozen=True, slots=True)
class ReleaseHold(_OnHold):
    def decide(self, user: User | None, context: Context) -> User:
        user = _existing(user, self.user_id, context.now)
        user.release_hold(self._hold(user, context), self.hold_id, context.cause, context.now)
        return user


# -- allowances ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetAllowance(Command):
    balance: Balance
    amount: int
    period: str
    anchor: datetime | None = None

    def decide(self, user: User | None, context: Context) -> User:
        user = _existing(user, self.user_id, context.now)
        user.set_allowance(
            self.balance, self.amount, self.period, self.anchor, context.cause, context.now
        )
        return user


@dataclass(frozen=True, slots=True)
class RemoveAllowance(Command):
    balance: Balance

    def decide(self, user: User | None, context: Context) -> User:
        user = _existing(user, self.user_id, context.now)
        user.remove_allowance(self.balance, context.cause, context.now)
        return user


# -- time ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CatchUp(Command):
    """Record what time has brought the user (the expiry worker's command)."""

    def decide(self, user: User | None, context: Context) -> User:
        if user is None:
            raise UserNotFound(f"no user with id {self.user_id!r}")
        if not user.catch_up(context.now):
            due = user.state.next_due_at
            raise NothingDue(
                f"nothing is due for {self.user_id!r}",
                facts={"next_due_at": None if due is None else due.isoformat()},
            )
        return user


# -- Stripe --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Paid:
    """A payment went through for `sku` (its terms `offer`, None if the
    catalogue has no such SKU), of `amount` in `currency`."""

    purchase_id: str
    sku: str
    offer: Offer | None
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class Unused:
    """A delivery the ledger does not act on (`ignored`), or refuses for good
    (`rejected`), and why."""

    outcome: str
    reason: str


@dataclass(frozen=True, slots=True)
class ApplyStripeEvent(Command):
    """One Stripe delivery: a purchase paid, a change of one (a refund, a
    dispute), or neither. A change names a payment, not a user: its user is
    NO_USER until the writer finds who paid with it."""

    delivery: Delivery
    fact: Paid | Change | Unused

    alone = True

    def decide(self, user: User | None, context: Context) -> User:
        received, now = context.received, context.now
        if received.previous is not None:
            raise AlreadyReceived(
                f"{self.delivery.event_id} was received already", facts=received.previous
            )
        fact, payment = self.fact, self.delivery.payment_intent
        if isinstance(fact, Unused):
            raise (Rejected if fact.outcome == Rejected.outcome else Ignored)(fact.reason)
        if isinstance(fact, Paid):
            if fact.offer is None:
                raise Rejected(f"the catalogue has no SKU {fact.sku!r}")
            try:
                if user is None:
                    user = User.register(self.user_id, context.cause, now)
                else:
                    user.catch_up(now)
                paid = (fact.amount, fact.currency)
                user.complete_purchase(
                    fact.purchase_id, fact.offer, paid, payment, context.cause, now
                )
            except InvalidCommand as e:  # refused for good: Stripe need not send it again
                raise Rejected(e.detail) from e
            for delivery, change in received.waiting:
                assert payment is not None  # what waits for a purchase names its payment
                with contextlib.suppress(NotApplied):  # each refuses before it records
                    user.change_purchase(payment, change, delivery.cause(), now)
            return user
        if user is None or payment is None:
            raise Waiting(f"no purchase was paid with {payment} yet")
        user.catch_up(now)
        user.change_purchase(payment, fact, context.cause, now)
        return user
