"""A user's events: the base every event shares, the opening events and plan
changes. Balance, allowance and hold events have modules of their own
(`balance_events`, `hold_events`).

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

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, ClassVar

from eventsourcing.domain import CanInitAggregate, CanMutateAggregate, MetaDomainEvent

from ledger.domain.balance import BALANCES, Balance
from ledger.domain.grants import Grant, Part, Source, grant_id, in_order, summed
from ledger.domain.rules import (
    DEFAULT_FREE_CHAT_MESSAGES,
    DEFAULT_FREE_CREDITS,
    MAX_BALANCE,
)
from ledger.domain.state import InvariantViolation, UserState

#: How stored events name the aggregate and its event classes.
TOPIC_PREFIX = "ledger.domain:User"


#: The balances, with the state attributes of what is available and what is
#: held of each (looked up once: an enum's members and properties are slow to
#: reach in the fold's inner loop).
_COLUMNS = tuple((kind, kind.value, kind.held) for kind in BALANCES)
#: Two balances: the fold sums each without a dictionary (one is credits).
_CREDITS = Balance.CREDITS
assert BALANCES == (Balance.CREDITS, Balance.CHAT_MESSAGES)


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

    @property
    def data(self) -> dict[str, Any]:
        """The event's own fields, as the API shows them."""
        return {}

    @property
    def grant_ids(self) -> tuple[str, ...]:
        """The grants this event made, took from or gave back to, by its data."""
        return ()

    def touched_grants(self, after: UserState) -> tuple[str, ...]:
        """Every grant this event changed, given the state it left: its own,
        and those of the hold it placed or closed."""
        hold_id = getattr(self, "hold_id", None)
        hold = after.hold(hold_id) if isinstance(hold_id, str) else None
        return (*self.grant_ids, *(g for g, _ in (hold.grants if hold is not None else ())))

    # -- for evolve -----------------------------------------------------------

    def _check_follows(self, state: UserState | None) -> UserState:
        """The state this event changes, checked to be the one it follows, less
        what the event before closed or used up."""
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
        return state.pruned()

    def _next(self, state: UserState, **changes: Any) -> UserState:
        """`state` as this event leaves it: at its version and time, changed."""
        changes["version"], changes["updated_at"] = self.originator_version, self.timestamp
        return state.changed(changes)

    def _settled(
        self, before: UserState, granted: Balance | None = None, /, **changes: Any
    ) -> UserState:
        """`before` as this event leaves it, in one step: changed by `changes`,
        at its version and time, its available and held amounts summed from its
        grants and holds (and its next expiries with them). A balance that was
        NULL (imported from before the credit columns) stays NULL until a grant
        of it (`granted`)."""
        credits_held = messages_held = 0
        credits, messages, changes["expiring"] = summed(changes.get("grants", before.grants))
        for h in changes.get("holds", before.holds):
            if h.is_open:
                if h.balance is _CREDITS:
                    credits_held += h.amount
                else:
                    messages_held += h.amount
        for kind, available, held_name in _COLUMNS:
            value: int | None
            value, held = (credits, credits_held) if kind is _CREDITS else (messages, messages_held)
            if not value and kind is not granted and getattr(before, available) is None:
                value = None
            if (value or 0) + held > MAX_BALANCE:
                raise self._violation(f"takes {available} past {MAX_BALANCE:,}")
            changes[available] = value
            changes[held_name] = held
        changes["version"], changes["updated_at"] = self.originator_version, self.timestamp
        return before.changed(changes)

    def _violation(self, what: str) -> InvariantViolation:
        return InvariantViolation(
            f"{type(self).__name__} at version {self.originator_version} "
            f"of {self.originator_id!r} {what}"
        )


def parts_of(listed: Sequence[dict[str, Any]] | None) -> tuple[Part, ...]:
    """The `grants` of an event's data, as (grant id, amount) pairs."""
    return tuple((str(p["grant_id"]), int(p["amount"])) for p in listed or ())


def listed(parts: Iterable[Part]) -> list[dict[str, Any]]:
    """(grant id, amount) pairs as an event's data lists them."""
    return [{"grant_id": g, "amount": a} for g, a in parts]


class _Opening(UserEvent, CanInitAggregate[str]):
    originator_topic: str
    level: str
    renewal_period: str | None
    free_credits: int | None
    free_chat_messages: int | None

    source: ClassVar[str] = Source.REGISTRATION.value

    def evolve(self, state: UserState | None) -> UserState:
        if state is not None or self.originator_version != 1:
            raise InvariantViolation(
                f"{type(self).__name__} of {self.originator_id!r} "
                f"is not the first event of its stream"
            )
        grants = []
        for kind in Balance:
            value = getattr(self, kind.value)
            if value is not None and not 0 <= value <= MAX_BALANCE:
                raise InvariantViolation(f"{kind.value} {value} is out of bounds")
            if value:
                grants.append(self._grant(kind, value))
        return UserState(
            id=self.originator_id,
            level=self.level,
            renewal_period=self.renewal_period,
            free_credits=self.free_credits,
            free_chat_messages=self.free_chat_messages,
            version=1,
            updated_at=self.timestamp,
            grants=in_order(grants),
            expiring=summed(grants)[2],
        )

    def _grant(self, kind: Balance, amount: int) -> Grant:
        return Grant(
            id=grant_id(self.originator_id, 1, kind),
            balance=kind,
            amount=amount,
            remaining=amount,
            priority=50,
            expires_at=None,
            granted_at=self.timestamp,
            source=self.source,
            reason=None,
        )

    @property
    def grant_ids(self) -> tuple[str, ...]:
        return tuple(
            grant_id(self.originator_id, 1, kind) for kind in Balance if getattr(self, kind.value)
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
    """A new user: level free, no renewal, the default balances, each one grant.

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
    legacy levels and NULL balances allowed. Each balance is one grant."""

    source = Source.IMPORT.value


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


def fold(events: Iterable[UserEvent], state: UserState | None = None) -> UserState | None:
    """The state after `events`, starting from `state`."""
    for event in events:
        state = event.evolve(state)
    return state
