"""The rules: limits, and the pure checks shared by commands and by the import."""

from __future__ import annotations

import re
from enum import StrEnum

from ledger.errors import BalanceLimit, InsufficientBalance, InvalidCommand

MIN_AMOUNT = 1
MAX_AMOUNT = 1_000_000
MAX_BALANCE = 2_147_483_647
DEFAULT_FREE_CREDITS = 10
DEFAULT_FREE_CHAT_MESSAGES = 20
MAX_REASON_LENGTH = 200
USER_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
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


def check_can_grant(balance: int | None, amount: int, name: str) -> None:
    after = (balance or 0) + amount
    if after > MAX_BALANCE:
        raise BalanceLimit(
            f"granting {amount:,} would take {name} to {after:,}, above {MAX_BALANCE:,}"
        )


def check_can_spend(balance: int | None, amount: int, name: str) -> None:
    available = balance or 0  # a NULL balance (imported from before credits) spends as 0
    if amount > available:
        raise InsufficientBalance(f"{name} is {available:,}; cannot spend {amount:,}")
