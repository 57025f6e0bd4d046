"""Events of a balance: grants, spends, expiries, and allowances."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from ledger.domain import grants as lots
from ledger.domain.allowances import Allowance
from ledger.domain.balance import Balance
from ledger.domain.events import UserEvent, parts_of
from ledger.domain.grants import DEFAULT_PRIORITY, Grant, Source, grant_id
from ledger.domain.rules import MAX_AMOUNT, MIN_AMOUNT
from ledger.domain.state import UserState


class _Granted(UserEvent):
    """A grant: a lot added to the balance, with its priority and expiry.

    Version 1 (before lots) had an amount and a reason only: it reads as a
    grant of priority 50 that never expires, named by its place in the stream."""

    amount: int
    reason: str | None
    grant_id: str
    priority: int
    expires_at: datetime | None
    source: str

    balance: ClassVar[Balance]
    class_version = 2

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["grant_id"] = grant_id(state["originator_id"], state["originator_version"])
        state["priority"] = DEFAULT_PRIORITY
        state["expires_at"] = None
        state["source"] = Source.GRANT.value

    def evolve(self, state: UserState | None) -> UserState:
        before = self._check_follows(state)
        if not MIN_AMOUNT <= self.amount <= MAX_AMOUNT:
            raise self._violation(f"grants {self.amount}")
        grant = Grant(
            id=self.grant_id,
            balance=self.balance,
            amount=self.amount,
            remaining=self.amount,
            priority=self.priority,
            expires_at=self.expires_at,
            granted_at=self.timestamp,
            source=self.source,
            reason=self.reason,
        )
        total = self.balance.granted_total
        return self._settled(
            before,
            self.balance,
            grants=lots.added(before.grants, grant),
            **{total: before.total(total) + self.amount},
        )

    @property
    def grant_ids(self) -> tuple[str, ...]:
        return (self.grant_id,)

    @property
    def data(self) -> dict[str, Any]:
        return {
            "amount": self.amount,
            "reason": self.reason,
            "grant_id": self.grant_id,
            "priority": self.priority,
            "expires_at": self.expires_at,
            "source": self.source,
        }


class _Spent(UserEvent):
    """A spend, and the grants it drew from (in the consumption order).

    Version 1 (before lots) did not say: the fold draws it by the rule, as the
    decision would have (its grants never expired)."""

    amount: int
    reason: str | None
    grants: list[dict[str, Any]] | None

    balance: ClassVar[Balance]
    class_version = 2

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["grants"] = None

    def evolve(self, state: UserState | None) -> UserState:
        before = self._check_follows(state)
        if not MIN_AMOUNT <= self.amount <= MAX_AMOUNT:
            raise self._violation(f"spends {self.amount}")
        try:
            parts = self._parts(before)
            grants = lots.take(before.grants, parts, hold=False)
        except ValueError as e:
            raise self._violation(f"cannot be drawn: {e}") from e
        total = self.balance.spent_total
        return self._settled(before, grants=grants, **{total: before.total(total) + self.amount})

    def _parts(self, state: UserState) -> tuple[lots.Part, ...]:
        if self.grants is None:
            return tuple(lots.draw(state.grants, self.balance, self.amount, self.timestamp))
        parts = parts_of(self.grants)
        if sum(a for _, a in parts) != self.amount:
            raise ValueError(f"its grants add up to {sum(a for _, a in parts)}")
        return parts

    @property
    def grant_ids(self) -> tuple[str, ...]:
        return tuple(g for g, _ in parts_of(self.grants))

    @property
    def data(self) -> dict[str, Any]:
        return {"amount": self.amount, "reason": self.reason, "grants": self.grants or []}


class _Expired(UserEvent):
    """A grant's remainder expired at `expired_at` (its expiry, or earlier when
    an allowance is replaced); whatever comes back to it later expires too."""

    grant_id: str
    amount: int
    expired_at: datetime

    balance: ClassVar[Balance]

    def evolve(self, state: UserState | None) -> UserState:
        before = self._check_follows(state)
        try:
            grants = lots.expire(before.grants, self.grant_id, self.amount, self.expired_at)
        except ValueError as e:
            raise self._violation(str(e)) from e
        total = self.balance.expired_total
        return self._settled(before, grants=grants, **{total: before.total(total) + self.amount})

    @property
    def grant_ids(self) -> tuple[str, ...]:
        return (self.grant_id,)

    @property
    def data(self) -> dict[str, Any]:
        return {"grant_id": self.grant_id, "amount": self.amount, "expired_at": self.expired_at}


class CreditsGranted(_Granted):
    balance = Balance.CREDITS


class CreditsSpent(_Spent):
    balance = Balance.CREDITS


class CreditsExpired(_Expired):
    balance = Balance.CREDITS


class ChatMessagesGranted(_Granted):
    balance = Balance.CHAT_MESSAGES


class ChatMessagesSpent(_Spent):
    balance = Balance.CHAT_MESSAGES


class ChatMessagesExpired(_Expired):
    balance = Balance.CHAT_MESSAGES


GRANTED: dict[Balance, type[_Granted]] = {
    Balance.CREDITS: CreditsGranted,
    Balance.CHAT_MESSAGES: ChatMessagesGranted,
}
SPENT: dict[Balance, type[_Spent]] = {
    Balance.CREDITS: CreditsSpent,
    Balance.CHAT_MESSAGES: ChatMessagesSpent,
}
EXPIRED: dict[Balance, type[_Expired]] = {
    Balance.CREDITS: CreditsExpired,
    Balance.CHAT_MESSAGES: ChatMessagesExpired,
}


# -- allowances ------------------------------------------------------------------


class AllowanceSet(UserEvent):
    """From `anchor` on, `balance` is reset to `amount` every `period`. It
    replaces the balance's allowance, if it had one."""

    balance: str
    amount: int
    period: str
    anchor: datetime

    def evolve(self, state: UserState | None) -> UserState:
        before = self._check_follows(state)
        kind = Balance(self.balance)
        allowance = Allowance(kind, self.amount, self.period, self.anchor)
        others = tuple(a for a in before.allowances if a.balance is not kind)
        return self._next(before, allowances=(*others, allowance))

    @property
    def data(self) -> dict[str, Any]:
        return {
            "balance": self.balance,
            "amount": self.amount,
            "period": self.period,
            "anchor": self.anchor,
        }


class AllowanceRemoved(UserEvent):
    """No more resets of `balance`; the current period's grant runs its course."""

    balance: str

    def evolve(self, state: UserState | None) -> UserState:
        before = self._check_follows(state)
        kind = Balance(self.balance)
        allowances = tuple(a for a in before.allowances if a.balance is not kind)
        return self._next(before, allowances=allowances)

    @property
    def data(self) -> dict[str, Any]:
        return {"balance": self.balance}


class AllowanceGranted(UserEvent):
    """An allowance's grant for one period, expiring at the period's end."""

    balance: str
    amount: int
    period_start: datetime
    period_end: datetime
    grant_id: str

    def evolve(self, state: UserState | None) -> UserState:
        before = self._check_follows(state)
        kind = Balance(self.balance)
        allowance = before.allowance(kind)
        if allowance is None:
            raise self._violation(f"grants an allowance of {kind.value}, which has none")
        grant = Grant(
            id=self.grant_id,
            balance=kind,
            amount=self.amount,
            remaining=self.amount,
            priority=DEFAULT_PRIORITY,
            expires_at=self.period_end,
            granted_at=self.timestamp,
            source=Source.ALLOWANCE.value,
            reason=f"{allowance.period} allowance",
        )
        current = allowance._replace(
            period_start=self.period_start, period_end=self.period_end, grant_id=self.grant_id
        )
        total = kind.granted_total
        return self._settled(
            before,
            kind,
            grants=lots.added(before.grants, grant) if self.amount else before.grants,
            allowances=tuple(current if a.balance is kind else a for a in before.allowances),
            **{total: before.total(total) + self.amount},
        )

    @property
    def grant_ids(self) -> tuple[str, ...]:
        return (self.grant_id,) if self.amount else ()

    @property
    def data(self) -> dict[str, Any]:
        return {
            "balance": self.balance,
            "amount": self.amount,
            "period_start": self.period_start,
            "period_end": self.period_end,
            "grant_id": self.grant_id,
        }
