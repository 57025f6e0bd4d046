"""The User aggregate: its events, its rules, and the one fold of events into state.

Every event class has an `evolve` method: the state after the event, given the
state before it. The aggregate applies events through it (the library's
`mutate` calls `apply`, which calls `evolve`), and so do the projector, the
rebuild, the audit and the time-travel queries. There is no other place where
events turn into balances; `fold` is `evolve` over a sequence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from eventsourcing.domain import (
    BaseAggregate,
    CanInitAggregate,
    CanMutateAggregate,
    MetaDomainEvent,
    datetime_now_with_tzinfo,
)

from ledger.errors import (
    BalanceLimit,
    InsufficientBalance,
    InvalidCommand,
)

MIN_AMOUNT = 1
MAX_AMOUNT = 1_000_000
MAX_BALANCE = 2_147_483_647
DEFAULT_FREE_CREDITS = 10
DEFAULT_FREE_CHAT_MESSAGES = 20
MAX_REASON_LENGTH = 200
USER_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
#: Changes whenever `evolve` (or an upcaster) does: snapshots of the state made
#: by another fold are then ignored (see ledger.snapshots).
FOLD_VERSION = 1
_USER_ID = re.compile(USER_ID_PATTERN)


class Level(StrEnum):
    FREE = "free"
    PAID = "paid"
    BASIC = "basic"  # legacy: readable in history, refused in new commands
    PRO = "pro"  # legacy


class RenewalPeriod(StrEnum):
    LIFETIME = "lifetime"
    MONTHLY = "monthly"  # legacy


CURRENT_LEVELS = frozenset({Level.FREE, Level.PAID})
CURRENT_RENEWAL_PERIODS = frozenset({RenewalPeriod.LIFETIME})


class Balance(StrEnum):
    """The two balances a user holds; the state attribute of each has the same name."""

    CREDITS = "free_credits"
    CHAT_MESSAGES = "free_chat_messages"


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

    def as_dict(self) -> dict[str, str | None]:
        return {
            "actor_role": self.actor_role,
            "actor_key_id": self.actor_key_id,
            "request_id": self.request_id,
            "idempotency_key": self.idempotency_key,
        }


class UserState(NamedTuple):
    """A user as history leaves them. The totals count every grant and spend ever
    recorded, so that a projection can show them without a second fold.
    (A named tuple: the fold makes one per event, and `_replace` is cheap.)"""

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


# ---------------------------------------------------------------------------
# Rules: pure checks, shared by commands and by the import.


def check_user_id(user_id: object) -> str:
    if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id):
        raise InvalidCommand("a user id is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-'")
    return user_id


def check_amount(amount: object) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidCommand("amount must be an integer")
    if not MIN_AMOUNT <= amount <= MAX_AMOUNT:
        raise InvalidCommand(f"amount must be from {MIN_AMOUNT} to {MAX_AMOUNT:,}")
    return amount


def check_reason(reason: object) -> str | None:
    if reason is None:
        return None
    if not isinstance(reason, str) or len(reason) > MAX_REASON_LENGTH:
        raise InvalidCommand(f"reason must be a string of at most {MAX_REASON_LENGTH} characters")
    if "\x00" in reason:  # PostgreSQL text and jsonb cannot hold it
        raise InvalidCommand("reason must not contain NUL characters")
    return reason


def check_plan(level: object, renewal_period: object, *, allow_legacy: bool = False) -> None:
    levels = set(Level) if allow_legacy else CURRENT_LEVELS
    periods = set(RenewalPeriod) if allow_legacy else CURRENT_RENEWAL_PERIODS
    if level not in levels:
        names = ", ".join(sorted(levels))
        raise InvalidCommand(f"level must be one of: {names}")
    if renewal_period is not None and renewal_period not in periods:
        names = ", ".join(sorted(periods))
        raise InvalidCommand(f"renewal_period must be null or one of: {names}")
    if allow_legacy:
        return
    if level == Level.PAID and renewal_period is None:
        raise InvalidCommand("level 'paid' needs a renewal_period")
    if level == Level.FREE and renewal_period is not None:
        raise InvalidCommand("level 'free' takes no renewal_period")


def check_balance(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidCommand(f"{name} must be an integer or empty")
    if not 0 <= value <= MAX_BALANCE:
        raise InvalidCommand(f"{name} must be from 0 to {MAX_BALANCE:,}")
    return value


def _granted(balance: int | None, amount: int, name: str) -> int:
    after = (balance or 0) + amount
    if after > MAX_BALANCE:
        raise BalanceLimit(
            f"granting {amount:,} would take {name} to {after:,}, above {MAX_BALANCE:,}"
        )
    return after


def _spent(balance: int | None, amount: int, name: str) -> int:
    available = balance or 0  # a NULL balance (imported from before credits) spends as 0
    if amount > available:
        raise InsufficientBalance(f"{name} is {available:,}; cannot spend {amount:,}")
    return available - amount


# ---------------------------------------------------------------------------
# The aggregate and its events.


class User(BaseAggregate[str]):
    """One user's stream. Command methods check the rules, then record an event;
    events change state only through `evolve`."""

    class Event(CanMutateAggregate[str], metaclass=MetaDomainEvent):
        originator_id: str
        originator_version: int
        timestamp: datetime
        cause: dict[str, Any] | None

        def apply(self, aggregate: Any) -> None:
            aggregate.state = self.evolve(getattr(aggregate, "state", None))

        def evolve(self, state: UserState | None) -> UserState:
            raise NotImplementedError

        def _check_follows(self, state: UserState | None) -> UserState:
            """The state this event changes, checked to be the one it follows."""
            if state is None:
                raise InvariantViolation(
                    f"{type(self).__name__} at version {self.originator_version} "
                    f"of {self.originator_id!r} comes before the user exists"
                )
            if self.originator_version != state.version + 1:
                raise InvariantViolation(
                    f"{type(self).__name__} of {self.originator_id!r} has version "
                    f"{self.originator_version}, expected {state.version + 1}"
                )
            return state

        def _next(self, state: UserState, **changes: Any) -> UserState:
            """`state` as this event leaves it: at its version and time, changed."""
            return state._replace(
                version=self.originator_version, updated_at=self.timestamp, **changes
            )

        @property
        def data(self) -> dict[str, Any]:
            """The event's own fields, as the API shows them."""
            return {}

    class _Opening(Event, CanInitAggregate[str]):
        originator_topic: str
        level: str
        renewal_period: str | None
        free_credits: int | None
        free_chat_messages: int | None

        def evolve(self, state: UserState | None) -> UserState:
            if state is not None or self.originator_version != 1:
                raise InvariantViolation(
                    f"{type(self).__name__} of {self.originator_id!r} "
                    f"is not the first event of its stream"
                )
            for name, value in (
                ("free_credits", self.free_credits),
                ("free_chat_messages", self.free_chat_messages),
            ):
                if value is not None and not 0 <= value <= MAX_BALANCE:
                    raise InvariantViolation(f"{name} {value} is out of bounds")
            return UserState(
                id=self.originator_id,
                level=self.level,
                renewal_period=self.renewal_period,
                free_credits=self.free_credits,
                free_chat_messages=self.free_chat_messages,
                version=1,
                updated_at=self.timestamp,
            )

        @property
        def data(self) -> dict[str, Any]:
            return {
                "user_id": self.originator_id,
                "level": self.level,
                "renewal_period": self.renewal_period,
                "free_credits": self.free_credits,
                "free_chat_messages": self.free_chat_messages,
            }

    class UserRegistered(_Opening):
        """A new user: level free, no renewal, the default balances.

        Version 1 is the shape from before the credit system: a level (basic or
        pro) and a renewal period, no balances. Users then got the credit
        columns' defaults, 10 and 20, and so does an upcast version 1 event.
        """

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("free_credits", DEFAULT_FREE_CREDITS)
            state.setdefault("free_chat_messages", DEFAULT_FREE_CHAT_MESSAGES)
            state.setdefault("cause", None)

    class UserImported(_Opening):
        """A user brought in from an existing CRUD table, as that table had them:
        legacy levels and NULL balances allowed."""

    class _Change(Event):
        amount: int
        reason: str | None

        balance: ClassVar[Balance]
        is_grant: ClassVar[bool]

        def evolve(self, state: UserState | None) -> UserState:
            state = self._check_follows(state)
            name = self.balance.value
            before: int | None = getattr(state, name)
            if self.is_grant:
                value = (before or 0) + self.amount
                total = f"{name.removeprefix('free_')}_granted_total"
            else:
                value = (before or 0) - self.amount
                total = f"{name.removeprefix('free_')}_spent_total"
            if not 0 <= value <= MAX_BALANCE or not MIN_AMOUNT <= self.amount <= MAX_AMOUNT:
                raise InvariantViolation(
                    f"{type(self).__name__} of {self.amount} at version "
                    f"{self.originator_version} of {self.originator_id!r} "
                    f"takes {name} from {before} to {value}"
                )
            return self._next(state, **{name: value, total: getattr(state, total) + self.amount})

        @property
        def data(self) -> dict[str, Any]:
            return {"amount": self.amount, "reason": self.reason}

    class CreditsGranted(_Change):
        balance = Balance.CREDITS
        is_grant = True

    class CreditsSpent(_Change):
        balance = Balance.CREDITS
        is_grant = False

    class ChatMessagesGranted(_Change):
        balance = Balance.CHAT_MESSAGES
        is_grant = True

    class ChatMessagesSpent(_Change):
        balance = Balance.CHAT_MESSAGES
        is_grant = False

    class PlanChanged(Event):
        level: str
        renewal_period: str | None

        def evolve(self, state: UserState | None) -> UserState:
            return self._next(
                self._check_follows(state), level=self.level, renewal_period=self.renewal_period
            )

        @property
        def data(self) -> dict[str, Any]:
            return {"level": self.level, "renewal_period": self.renewal_period}

    if TYPE_CHECKING:
        state: UserState

    @classmethod
    def from_state(cls, state: UserState) -> User:
        """A user as a snapshot of their state left them, with no events pending."""
        user = cls.__new__(cls)
        user.__base_init__(
            originator_id=state.id, originator_version=state.version, timestamp=state.updated_at
        )
        user.state = state
        return user

    # -- commands -----------------------------------------------------------

    @classmethod
    def register(cls, user_id: str, cause: Cause) -> User:
        return cls._create(
            cls.UserRegistered,
            id=check_user_id(user_id),
            level=Level.FREE.value,
            renewal_period=None,
            free_credits=DEFAULT_FREE_CREDITS,
            free_chat_messages=DEFAULT_FREE_CHAT_MESSAGES,
            cause=cause.as_dict(),
        )

    @classmethod
    def import_(
        cls,
        user_id: str,
        level: str,
        renewal_period: str | None,
        free_credits: int | None,
        free_chat_messages: int | None,
        cause: Cause,
    ) -> User:
        check_plan(level, renewal_period, allow_legacy=True)
        return cls._create(
            cls.UserImported,
            id=check_user_id(user_id),
            level=str(level),
            renewal_period=None if renewal_period is None else str(renewal_period),
            free_credits=check_balance(free_credits, "free_credits"),
            free_chat_messages=check_balance(free_chat_messages, "free_chat_messages"),
            cause=cause.as_dict(),
        )

    def grant(self, balance: Balance, amount: int, reason: str | None, cause: Cause) -> None:
        amount, reason = check_amount(amount), check_reason(reason)
        _granted(getattr(self.state, balance.value), amount, balance.value)
        event_class = (
            self.CreditsGranted if balance is Balance.CREDITS else self.ChatMessagesGranted
        )
        self._record(event_class, amount=amount, reason=reason, cause=cause)

    def spend(self, balance: Balance, amount: int, reason: str | None, cause: Cause) -> None:
        amount, reason = check_amount(amount), check_reason(reason)
        _spent(getattr(self.state, balance.value), amount, balance.value)
        event_class = self.CreditsSpent if balance is Balance.CREDITS else self.ChatMessagesSpent
        self._record(event_class, amount=amount, reason=reason, cause=cause)

    def change_plan(self, level: str, renewal_period: str | None, cause: Cause) -> None:
        check_plan(level, renewal_period)
        self._record(
            self.PlanChanged,
            level=str(level),
            renewal_period=None if renewal_period is None else str(renewal_period),
            cause=cause,
        )

    def _record(self, event_class: type[User.Event], cause: Cause, **fields: Any) -> None:
        # Times within one stream never go backwards, even if the clock does, so
        # "the state at time T" is always a prefix of the stream.
        now = datetime_now_with_tzinfo()
        earliest = self.modified_on + timedelta(microseconds=1)
        self.trigger_event(
            event_class, timestamp=max(now, earliest), cause=cause.as_dict(), **fields
        )


#: The names the API and the event log show, by event class.
EVENT_TYPES: dict[type[User.Event], str] = {
    cls: cls.__name__
    for cls in (
        User.UserRegistered,
        User.UserImported,
        User.CreditsGranted,
        User.CreditsSpent,
        User.ChatMessagesGranted,
        User.ChatMessagesSpent,
        User.PlanChanged,
    )
}


def fold(events: Iterable[User.Event], state: UserState | None = None) -> UserState | None:
    """The state after `events`, starting from `state`."""
    for event in events:
        state = event.evolve(state)
    return state
