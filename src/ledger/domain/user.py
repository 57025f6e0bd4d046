"""The User aggregate: command methods check the rules, then record events;
events change state only through their `evolve`.

Every command method takes `now`, the writer's clock for its batch: what time
has brought is recorded first (`catch_up`), so that a decision never sees a
hold or a grant past its expiry, nor an allowance period not yet granted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from eventsourcing.domain import BaseAggregate, CanInitAggregate, CanMutateAggregate

from ledger.domain import balance_events, events, hold_events, purchase_events
from ledger.domain import grants as lots
from ledger.domain.balance import Balance
from ledger.domain.due import next_step
from ledger.domain.events import listed
from ledger.domain.explain import insufficient
from ledger.domain.grants import DEFAULT_PRIORITY, Source
from ledger.domain.grants import grant_id as version_grant_id
from ledger.domain.holds import Hold, HoldStatus
from ledger.domain.purchasing import Purchasing
from ledger.domain.rules import (
    DEFAULT_FREE_CHAT_MESSAGES,
    DEFAULT_FREE_CREDITS,
    Level,
    check_amount,
    check_anchor,
    check_balance,
    check_can_grant,
    check_expires_at,
    check_period,
    check_plan,
    check_priority,
    check_reason,
    check_settle_amount,
    check_ttl,
    check_user_id,
)
from ledger.domain.state import Cause, UserState
from ledger.errors import (
    HoldClosed,
    HoldExists,
    HoldHasExpired,
    HoldNotFound,
    InvalidCommand,
    SettleExceedsHold,
)
from ledger.times import timestamp

#: Who time's own events are recorded as caused by.
TIME = Cause(actor_role="time")


class User(Purchasing, BaseAggregate[str]):
    """One user's stream (its purchases: ledger.domain.purchasing)."""

    TOPIC = events.TOPIC_PREFIX

    # The event classes, where the library and stored topics look for them.
    Event = events.UserEvent
    UserRegistered = events.UserRegistered
    UserImported = events.UserImported
    PlanChanged = events.PlanChanged
    CreditsGranted = balance_events.CreditsGranted
    CreditsSpent = balance_events.CreditsSpent
    CreditsExpired = balance_events.CreditsExpired
    ChatMessagesGranted = balance_events.ChatMessagesGranted
    ChatMessagesSpent = balance_events.ChatMessagesSpent
    ChatMessagesExpired = balance_events.ChatMessagesExpired
    AllowanceSet = balance_events.AllowanceSet
    AllowanceRemoved = balance_events.AllowanceRemoved
    AllowanceGranted = balance_events.AllowanceGranted
    HoldPlaced = hold_events.HoldPlaced
    HoldSettled = hold_events.HoldSettled
    HoldReleased = hold_events.HoldReleased
    HoldExpired = hold_events.HoldExpired
    PurchaseCompleted = purchase_events.PurchaseCompleted
    PurchaseRefunded = purchase_events.PurchaseRefunded
    PurchaseDisputed = purchase_events.PurchaseDisputed
    DisputeReinstated = purchase_events.DisputeReinstated

    if TYPE_CHECKING:
        state: UserState

    def __base_init__(
        self, originator_id: Any, originator_version: int, timestamp: datetime
    ) -> None:
        super().__base_init__(originator_id, originator_version, timestamp)
        #: Each pending event with the state it left, as it was applied.
        self._recorded: list[tuple[events.UserEvent, UserState]] = []

    @classmethod
    def from_state(cls, state: UserState) -> User:
        """A user as a snapshot of their state left them, with no events pending."""
        user = cls.__new__(cls)
        user.__base_init__(
            originator_id=state.id, originator_version=state.version, timestamp=state.updated_at
        )
        user.state = state
        return user

    # -- opening --------------------------------------------------------------

    @classmethod
    def register(cls, user_id: str, cause: Cause, now: datetime) -> User:
        return cls._created(
            events.UserRegistered,
            id=check_user_id(user_id),
            timestamp=now,
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
        now: datetime,
    ) -> User:
        check_plan(level, renewal_period, allow_legacy=True)
        return cls._created(
            events.UserImported,
            id=check_user_id(user_id),
            timestamp=now,
            level=str(level),
            renewal_period=None if renewal_period is None else str(renewal_period),
            free_credits=check_balance(free_credits, "free_credits"),
            free_chat_messages=check_balance(free_chat_messages, "free_chat_messages"),
            cause=cause.as_dict(),
        )

    # -- time -------------------------------------------------------------------

    def catch_up(self, now: datetime) -> int:
        """Record what time has brought by `now`, earliest first; how many events."""
        recorded = 0
        while (step := next_step(self.state, now)) is not None:
            self._record(step.event_class, TIME, now, **step.fields)
            recorded += 1
        return recorded

    # -- balances ---------------------------------------------------------------

    def grant(
        self,
        balance: Balance,
        amount: int,
        reason: str | None,
        cause: Cause,
        now: datetime,
        *,
        priority: int = DEFAULT_PRIORITY,
        expires_at: datetime | None = None,
        source: Source = Source.GRANT,
        grant_id: str | None = None,
    ) -> None:
        """`grant_id` names the grant (a purchase's); by default, its place
        in the stream does."""
        amount, reason = check_amount(amount), check_reason(reason)
        priority, expires_at = check_priority(priority), check_expires_at(expires_at, now)
        check_can_grant(
            self.state.balance(balance), self.state.held(balance), amount, balance.value
        )
        self._record(
            balance_events.GRANTED[balance],
            cause,
            now,
            amount=amount,
            reason=reason,
            grant_id=grant_id or version_grant_id(self.id, self.version + 1),
            priority=priority,
            expires_at=expires_at,
            source=source.value,
        )

    def spend(
        self, balance: Balance, amount: int, reason: str | None, cause: Cause, now: datetime
    ) -> None:
        amount, reason = check_amount(amount), check_reason(reason)
        parts = self._draw(balance, amount, now, "spend")
        self._record(
            balance_events.SPENT[balance],
            cause,
            now,
            amount=amount,
            reason=reason,
            grants=listed(parts),
        )

    def _draw(self, balance: Balance, amount: int, now: datetime, verb: str) -> list[lots.Part]:
        try:
            return lots.draw(self.state.grants, balance, amount, now)
        except ValueError:
            raise insufficient(self.state, balance, amount, now, verb) from None

    def change_plan(
        self, level: str, renewal_period: str | None, cause: Cause, now: datetime
    ) -> None:
        check_plan(level, renewal_period)
        self._record(
            events.PlanChanged,
            cause,
            now,
            level=str(level),
            renewal_period=None if renewal_period is None else str(renewal_period),
        )

    # -- allowances -----------------------------------------------------------------

    def set_allowance(
        self,
        balance: Balance,
        amount: int,
        period: str,
        anchor: datetime | None,
        cause: Cause,
        now: datetime,
    ) -> None:
        """Reset `balance` to `amount` every `period` from `anchor` (default
        now). An allowance set again starts over: the current period's grant
        ends now, and the new terms grant their current period at once."""
        amount, kind = check_amount(amount), check_period(period)
        start = check_anchor(anchor, now)
        current = self.state.allowance(balance)
        if current is not None and current.grant_id is not None:
            grant = self.state.grant(current.grant_id)
            if grant is not None and grant.remaining:
                self._record(
                    balance_events.EXPIRED[balance],
                    cause,
                    now,
                    grant_id=grant.id,
                    amount=grant.remaining,
                    expired_at=self._moment(now),
                )
        self._record(
            balance_events.AllowanceSet,
            cause,
            now,
            balance=balance.value,
            amount=amount,
            period=kind.value,
            anchor=start,
        )
        self.catch_up(now)

    def remove_allowance(self, balance: Balance, cause: Cause, now: datetime) -> None:
        if self.state.allowance(balance) is None:
            raise InvalidCommand(f"{balance.value} has no allowance")
        self._record(balance_events.AllowanceRemoved, cause, now, balance=balance.value)

    # -- holds --------------------------------------------------------------------

    def place_hold(
        self,
        balance: Balance,
        amount: int,
        reason: str | None,
        ttl_seconds: int,
        hold_id: str,
        cause: Cause,
        now: datetime,
    ) -> None:
        amount, reason, ttl = check_amount(amount), check_reason(reason), check_ttl(ttl_seconds)
        if self.state.hold(hold_id) is not None:
            raise HoldExists(f"hold {hold_id} exists already")
        parts = self._draw(balance, amount, now, "hold")
        self._record(
            hold_events.HoldPlaced,
            cause,
            now,
            hold_id=hold_id,
            balance=balance.value,
            amount=amount,
            reason=reason,
            expires_at=self._moment(now) + timedelta(seconds=ttl),
            grants=listed(parts),
        )

    def settle_hold(
        self,
        hold: Hold | None,
        hold_id: str,
        amount: int,
        reason: str | None,
        cause: Cause,
        now: datetime,
    ) -> None:
        """Settle the open hold `hold` (the state's, or as last recorded if it
        has left the state; None if there is no such hold)."""
        amount, reason = check_settle_amount(amount), check_reason(reason)
        hold = self._open(hold, hold_id)
        if amount > hold.amount:
            raise SettleExceedsHold(
                f"hold {hold.id} holds {hold.amount:,}; cannot settle {amount:,} "
                "(spend the difference with a spend)"
            )
        spent, _ = lots.draw_held(self.state.grants, hold.grants, amount)
        self._record(
            hold_events.HoldSettled,
            cause,
            now,
            hold_id=hold.id,
            amount=amount,
            released=hold.amount - amount,
            reason=reason,
            grants=listed(spent),
        )

    def release_hold(self, hold: Hold | None, hold_id: str, cause: Cause, now: datetime) -> None:
        hold = self._open(hold, hold_id)
        self._record(hold_events.HoldReleased, cause, now, hold_id=hold.id, amount=hold.amount)

    def _open(self, hold: Hold | None, hold_id: str) -> Hold:
        if hold is None:
            raise HoldNotFound(f"user {self.id!r} has no hold {hold_id}")
        if hold.status == HoldStatus.EXPIRED:
            raise HoldHasExpired(
                f"hold {hold.id} expired at {timestamp(hold.expires_at)}: it counts as released"
            )
        if not hold.is_open:
            assert hold.closed_at is not None
            how = (
                f"settled for {hold.settled_amount:,}"
                if hold.status == HoldStatus.SETTLED
                else "released"
            )
            raise HoldClosed(f"hold {hold.id} was {how} at {timestamp(hold.closed_at)}")
        return hold

    # -- recording ---------------------------------------------------------------

    def _moment(self, now: datetime) -> datetime:
        # Times within one stream never go backwards, even if the clock does, so
        # "the state at time T" is always a prefix of the stream.
        return max(now, self.modified_on + timedelta(microseconds=1))

    @classmethod
    def _created(cls, event_class: type[CanInitAggregate[str]], **fields: Any) -> User:
        user = cls._create(event_class, **fields)
        user._kept()  # noqa: SLF001 (its own class)
        return user

    def _record(
        self, event_class: type[events.UserEvent], cause: Cause, now: datetime, **fields: Any
    ) -> None:
        self.trigger_event(
            event_class, timestamp=self._moment(now), cause=cause.as_dict(), **fields
        )
        self._kept()

    def _kept(self) -> None:
        """Keep the state the event just applied left, beside it."""
        event = cast(events.UserEvent, self.pending_events[-1])
        self._recorded.append((event, self.state))

    def collect_recorded(self) -> list[tuple[events.UserEvent, UserState]]:
        """The pending events, collected, each with the state it left (kept as
        it was applied: nothing is folded again)."""
        recorded, self._recorded = self._recorded, []
        self.collect_events()
        return recorded

    def collect_events(self) -> Sequence[CanMutateAggregate[str]]:
        """The pending events, collected (the states they left forgotten)."""
        self._recorded = []
        return super().collect_events()


def as_of(state: UserState, now: datetime) -> UserState:
    """`state` as time has left it at `now` (holds and grants expired,
    allowances granted), nothing recorded: what a read of a past or present
    moment shows. Its version and time stay those of its last recorded event."""
    user = User.from_state(state)
    if not user.catch_up(now):
        return state
    return user.state._replace(version=state.version, updated_at=state.updated_at)
