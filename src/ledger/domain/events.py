"""A user's events, and the one fold of them into state.

Every event class has an `evolve` method: the state after the event, given the
state before it. The aggregate applies events through it (the library's
`mutate` calls `apply`, which calls `evolve`), and so do the projector, the
rebuild, the audit and the time-travel queries. There is no other place where
events turn into balances; `fold` is `evolve` over a sequence.

Stored events name their class by a topic, `ledger.domain:User.<class name>`,
fixed here whatever module the class lives in: topics are part of the stored
format, and old ones must resolve forever.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, ClassVar

from eventsourcing.domain import CanInitAggregate, CanMutateAggregate, MetaDomainEvent

from ledger.domain.balance import Balance
from ledger.domain.rules import (
    DEFAULT_FREE_CHAT_MESSAGES,
    DEFAULT_FREE_CREDITS,
    MAX_AMOUNT,
    MAX_BALANCE,
    MIN_AMOUNT,
)
from ledger.domain.state import InvariantViolation, UserState

#: How stored events name the aggregate and its event classes.
TOPIC_PREFIX = "ledger.domain:User"


class UserEvent(CanMutateAggregate[str], metaclass=MetaDomainEvent):
    originator_id: str
    originator_version: int
    timestamp: datetime
    cause: dict[str, Any] | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.TOPIC = f"{TOPIC_PREFIX}.{cls.__name__}"  # type: ignore[attr-defined]

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
        return state._replace(version=self.originator_version, updated_at=self.timestamp, **changes)

    @property
    def data(self) -> dict[str, Any]:
        """The event's own fields, as the API shows them."""
        return {}


class _Opening(UserEvent, CanInitAggregate[str]):
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
        for kind in Balance:
            value = getattr(self, kind.value)
            if value is not None and not 0 <= value <= MAX_BALANCE:
                raise InvariantViolation(f"{kind.value} {value} is out of bounds")
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


class _Change(UserEvent):
    amount: int
    reason: str | None

    balance: ClassVar[Balance]
    is_grant: ClassVar[bool]

    def evolve(self, state: UserState | None) -> UserState:
        state = self._check_follows(state)
        kind = self.balance
        before = state.balance(kind)
        total = kind.granted_total if self.is_grant else kind.spent_total
        value = (before or 0) + (self.amount if self.is_grant else -self.amount)
        if not 0 <= value <= MAX_BALANCE or not MIN_AMOUNT <= self.amount <= MAX_AMOUNT:
            raise InvariantViolation(
                f"{type(self).__name__} of {self.amount} at version "
                f"{self.originator_version} of {self.originator_id!r} "
                f"takes {kind.value} from {before} to {value}"
            )
        return self._next(state, **{kind.value: value, total: state.total(total) + self.amount})

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


class PlanChanged(UserEvent):
    level: str
    renewal_period: str | None

    def evolve(self, state: UserState | None) -> UserState:
        return self._next(
            self._check_follows(state), level=self.level, renewal_period=self.renewal_period
        )

    @property
    def data(self) -> dict[str, Any]:
        return {"level": self.level, "renewal_period": self.renewal_period}


#: The event classes a grant or a spend of each balance records.
GRANTED: dict[Balance, type[_Change]] = {
    Balance.CREDITS: CreditsGranted,
    Balance.CHAT_MESSAGES: ChatMessagesGranted,
}
SPENT: dict[Balance, type[_Change]] = {
    Balance.CREDITS: CreditsSpent,
    Balance.CHAT_MESSAGES: ChatMessagesSpent,
}

#: The names the API and the event log show, by event class.
EVENT_TYPES: dict[type[UserEvent], str] = {
    cls: cls.__name__
    for cls in (
        UserRegistered,
        UserImported,
        CreditsGranted,
        CreditsSpent,
        ChatMessagesGranted,
        ChatMessagesSpent,
        PlanChanged,
    )
}


def fold(events: Iterable[UserEvent], state: UserState | None = None) -> UserState | None:
    """The state after `events`, starting from `state`."""
    for event in events:
        state = event.evolve(state)
    return state
