"""The rules: limits, and the pure checks shared by commands and by the import."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from ledger.domain.allowances import Period
from ledger.domain.grants import MAX_PRIORITY, MIN_PRIORITY
from ledger.domain.holds import MAX_TTL_SECONDS, MIN_TTL_SECONDS
from ledger.errors import BalanceLimit, InvalidCommand

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


def check_can_grant(balance: int | None, held: int, amount: int, name: str) -> None:
    after = (balance or 0) + held + amount
    if after > MAX_BALANCE:
        raise BalanceLimit(
            f"granting {amount:,} would take {name} to {after:,}, above {MAX_BALANCE:,}"
        )


#: A grant may expire at most this far ahead.
LONGEST_EXPIRY = timedelta(days=36_525)


def check_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidCommand("priority must be an integer")
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidCommand(f"priority must be from {MIN_PRIORITY} to {MAX_PRIORITY}")
    return priority


def check_expires_at(expires_at: datetime | None, now: datetime) -> datetime | None:
    if expires_at is None:
        return None
    if expires_at.tzinfo is None:
        raise InvalidCommand("expires_at must have a timezone offset")
    if expires_at <= now:
        raise InvalidCommand("expires_at must be in the future")
    if expires_at - now > LONGEST_EXPIRY:
        raise InvalidCommand("expires_at must be at most 100 years ahead")
    return expires_at.astimezone(UTC)


def check_ttl(ttl_seconds: object) -> int:
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int):
        raise InvalidCommand("ttl_seconds must be an integer")
    if not MIN_TTL_SECONDS <= ttl_seconds <= MAX_TTL_SECONDS:
        raise InvalidCommand(f"ttl_seconds must be from {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS:,}")
    return ttl_seconds


def check_settle_amount(amount: object) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidCommand("amount must be an integer")
    if not 0 <= amount <= MAX_AMOUNT:
        raise InvalidCommand(f"amount must be from 0 to {MAX_AMOUNT:,}")
    return amount


def check_period(period: object) -> Period:
    try:
        return Period(str(period))
    except ValueError:
        raise InvalidCommand("period must be one of: day, week, month") from None


def check_anchor(anchor: datetime | None, now: datetime) -> datetime:
    """An allowance's anchor: when its periods start from (default now)."""
    if anchor is None:
        return now
    if anchor.tzinfo is None:
        raise InvalidCommand("anchor must have a timezone offset")
    if abs(anchor - now) > LONGEST_EXPIRY:
        raise InvalidCommand("anchor must be within 100 years of now")
    return anchor.astimezone(UTC)
