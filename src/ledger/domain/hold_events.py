"""Events of a hold: placed, then settled, released or expired, once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ledger.domain import grants as lots
from ledger.domain.balance import Balance
from ledger.domain.events import UserEvent, parts_of
from ledger.domain.holds import Hold, HoldStatus
from ledger.domain.rules import MAX_AMOUNT, MIN_AMOUNT
from ledger.domain.state import UserState


class HoldPlaced(UserEvent):
    """`amount` moved from available to held, out of `grants`, until settled,
    released, or `expires_at`."""

    hold_id: str
    balance: str
    amount: int
    reason: str | None
    expires_at: datetime
    grants: list[dict[str, Any]]

    def evolve(self, state: UserState | None) -> UserState:
        before = self._check_follows(state)
        parts = parts_of(self.grants)
        if not MIN_AMOUNT <= self.amount <= MAX_AMOUNT or sum(a for _, a in parts) != self.amount:
            raise self._violation(f"holds {self.amount} out of grants of {parts}")
        if before.hold(self.hold_id) is not None:
            raise self._violation(f"places {self.hold_id}, which exists")
        try:
            grants = lots.take(before.grants, parts, hold=True)
        except ValueError as e:
            raise self._violation(str(e)) from e
        hold = Hold(
            id=self.hold_id,
            balance=Balance(self.balance),
            amount=self.amount,
            reason=self.reason,
            created_at=self.timestamp,
            expires_at=self.expires_at,
            grants=parts,
        )
        return self._settled(before, grants=grants, holds=(*before.holds, hold))

    @property
    def grant_ids(self) -> tuple[str, ...]:
        return tuple(g for g, _ in parts_of(self.grants))

    @property
    def data(self) -> dict[str, Any]:
        return {
            "hold_id": self.hold_id,
            "balance": self.balance,
            "amount": self.amount,
            "reason": self.reason,
            "expires_at": self.expires_at,
            "grants": self.grants,
        }


class _Closing(UserEvent):
    """An event that closes an open hold, giving back what it does not spend."""

    hold_id: str

    def _open_hold(self, state: UserState) -> Hold:
        hold = state.hold(self.hold_id)
        if hold is None or not hold.is_open:
            raise self._violation(f"closes {self.hold_id}, which is not open")
        return hold

    def _close(
        self,
        before: UserState,
        hold: Hold,
        *,
        spent: tuple[lots.Part, ...],
        status: HoldStatus,
        at: datetime,
        settled: int | None = None,
    ) -> UserState:
        """`hold` closed at `at`: `spent` of its parts spent, the rest given back
        to their grants (what comes back to a grant past its expiry expires)."""
        spent_of = dict(spent)
        back = [(g, a - spent_of.get(g, 0)) for g, a in hold.grants if a - spent_of.get(g, 0)]
        try:
            grants = lots.spend_held(before.grants, spent)
            grants, expired = lots.give_back(grants, back, at)
        except ValueError as e:
            raise self._violation(str(e)) from e
        kind = hold.balance
        closed = hold._replace(status=status, settled_amount=settled, closed_at=at)
        spent_total, expired_total = kind.spent_total, kind.expired_total
        return self._settled(
            before,
            grants=grants,
            holds=tuple(closed if h.id == hold.id else h for h in before.holds),
            **{
                spent_total: before.total(spent_total) + sum(a for _, a in spent),
                expired_total: before.total(expired_total) + expired,
            },
        )


class HoldSettled(_Closing):
    """`amount` of the hold spent (from `grants`, in the consumption order), the
    rest (`released`) given back."""

    amount: int
    released: int
    reason: str | None
    grants: list[dict[str, Any]]

    def evolve(self, state: UserState | None) -> UserState:
        before = self._check_follows(state)
        hold = self._open_hold(before)
        spent = parts_of(self.grants)
        if sum(a for _, a in spent) != self.amount or self.amount + self.released != hold.amount:
            raise self._violation(f"settles {self.amount} of a hold of {hold.amount}")
        return self._close(
            before,
            hold,
            spent=spent,
            status=HoldStatus.SETTLED,
            at=self.timestamp,
            settled=self.amount,
        )

    @property
    def data(self) -> dict[str, Any]:
        return {
            "hold_id": self.hold_id,
            "amount": self.amount,
            "released": self.released,
            "reason": self.reason,
            "grants": self.grants,
        }


class HoldReleased(_Closing):
    """The whole hold given back."""

    amount: int

    def evolve(self, state: UserState | None) -> UserState:
        before = self._check_follows(state)
        hold = self._open_hold(before)
        return self._close(before, hold, spent=(), status=HoldStatus.RELEASED, at=self.timestamp)

    @property
    def data(self) -> dict[str, Any]:
        return {"hold_id": self.hold_id, "amount": self.amount}


class HoldExpired(_Closing):
    """The hold reached its `expires_at` open: given back as of that instant."""

    amount: int
    expired_at: datetime

    def evolve(self, state: UserState | None) -> UserState:
        before = self._check_follows(state)
        hold = self._open_hold(before)
        return self._close(before, hold, spent=(), status=HoldStatus.EXPIRED, at=self.expired_at)

    @property
    def data(self) -> dict[str, Any]:
        return {"hold_id": self.hold_id, "amount": self.amount, "expired_at": self.expired_at}
