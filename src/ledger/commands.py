"""Commands: what a caller asks of one user's stream, and how each is decided."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

from ledger import idempotency
from ledger.domain import Balance, Cause, User
from ledger.errors import UserExists, UserNotFound


@dataclass(frozen=True, slots=True)
class Command:
    user_id: str

    def decide(self, user: User | None, cause: Cause) -> User:
        """Record this command's event on `user` (created if need be), or raise a
        LedgerError and record nothing."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Equal for equal commands: how a reused idempotency key is recognised."""
        return idempotency.fingerprint(type(self).__name__, asdict(self))


def _existing(user: User | None, user_id: str) -> User:
    if user is None:
        raise UserNotFound(f"no user with id {user_id!r}")
    return user


@dataclass(frozen=True, slots=True)
class RegisterUser(Command):
    def decide(self, user: User | None, cause: Cause) -> User:
        if user is not None:
            raise UserExists(f"a user with id {self.user_id!r} exists already")
        return User.register(self.user_id, cause)


@dataclass(frozen=True, slots=True)
class ImportUser(Command):
    level: str
    renewal_period: str | None
    free_credits: int | None
    free_chat_messages: int | None

    def decide(self, user: User | None, cause: Cause) -> User:
        if user is not None:
            raise UserExists(f"a user with id {self.user_id!r} exists already")
        return User.import_(
            self.user_id,
            self.level,
            self.renewal_period,
            self.free_credits,
            self.free_chat_messages,
            cause,
        )


@dataclass(frozen=True, slots=True)
class _BalanceCommand(Command):
    amount: int
    reason: str | None = None

    balance: ClassVar[Balance]


@dataclass(frozen=True, slots=True)
class _Grant(_BalanceCommand):
    def decide(self, user: User | None, cause: Cause) -> User:
        user = _existing(user, self.user_id)
        user.grant(self.balance, self.amount, self.reason, cause)
        return user


@dataclass(frozen=True, slots=True)
class _Spend(_BalanceCommand):
    def decide(self, user: User | None, cause: Cause) -> User:
        user = _existing(user, self.user_id)
        user.spend(self.balance, self.amount, self.reason, cause)
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


@dataclass(frozen=True, slots=True)
class ChangePlan(Command):
    level: str
    renewal_period: str | None

    def decide(self, user: User | None, cause: Cause) -> User:
        user = _existing(user, self.user_id)
        user.change_plan(self.level, self.renewal_period, cause)
        return user
