"""The User aggregate: command methods check the rules, then record an event;
events change state only through their `evolve` (ledger.domain.events)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import BaseAggregate, datetime_now_with_tzinfo

from ledger.domain import events
from ledger.domain.balance import Balance
from ledger.domain.rules import (
    DEFAULT_FREE_CHAT_MESSAGES,
    DEFAULT_FREE_CREDITS,
    Level,
    check_amount,
    check_balance,
    check_can_grant,
    check_can_spend,
    check_plan,
    check_reason,
    check_user_id,
)
from ledger.domain.state import Cause, UserState


class User(BaseAggregate[str]):
    """One user's stream."""

    TOPIC = events.TOPIC_PREFIX

    # The event classes, where the library and stored topics look for them.
    Event = events.UserEvent
    UserRegistered = events.UserRegistered
    UserImported = events.UserImported
    CreditsGranted = events.CreditsGranted
    CreditsSpent = events.CreditsSpent
    ChatMessagesGranted = events.ChatMessagesGranted
    ChatMessagesSpent = events.ChatMessagesSpent
    PlanChanged = events.PlanChanged

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
            events.UserRegistered,
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
            events.UserImported,
            id=check_user_id(user_id),
            level=str(level),
            renewal_period=None if renewal_period is None else str(renewal_period),
            free_credits=check_balance(free_credits, "free_credits"),
            free_chat_messages=check_balance(free_chat_messages, "free_chat_messages"),
            cause=cause.as_dict(),
        )

    def grant(self, balance: Balance, amount: int, reason: str | None, cause: Cause) -> None:
        amount, reason = check_amount(amount), check_reason(reason)
        check_can_grant(self.state.balance(balance), amount, balance.value)
        self._record(events.GRANTED[balance], amount=amount, reason=reason, cause=cause)

    def spend(self, balance: Balance, amount: int, reason: str | None, cause: Cause) -> None:
        amount, reason = check_amount(amount), check_reason(reason)
        check_can_spend(self.state.balance(balance), amount, balance.value)
        self._record(events.SPENT[balance], amount=amount, reason=reason, cause=cause)

    def change_plan(self, level: str, renewal_period: str | None, cause: Cause) -> None:
        check_plan(level, renewal_period)
        self._record(
            events.PlanChanged,
            level=str(level),
            renewal_period=None if renewal_period is None else str(renewal_period),
            cause=cause,
        )

    def _record(self, event_class: type[events.UserEvent], cause: Cause, **fields: Any) -> None:
        # Times within one stream never go backwards, even if the clock does, so
        # "the state at time T" is always a prefix of the stream.
        now = datetime_now_with_tzinfo()
        earliest = self.modified_on + timedelta(microseconds=1)
        self.trigger_event(
            event_class, timestamp=max(now, earliest), cause=cause.as_dict(), **fields
        )
