"""The domain: the rules (`rules`), the two balances (`balance`), a user's state
(`state`), their events and the one fold (`events`), and the User aggregate
(`user`). Nothing here knows of a database or of HTTP.

Stored events name their classes `ledger.domain:User.<event>`: `User` is
importable from here for the library to resolve them.
"""

from ledger.domain.balance import Balance
from ledger.domain.events import EVENT_TYPES, UserEvent, fold
from ledger.domain.rules import (
    DEFAULT_FREE_CHAT_MESSAGES,
    DEFAULT_FREE_CREDITS,
    MAX_AMOUNT,
    MAX_BALANCE,
    MAX_REASON_LENGTH,
    MIN_AMOUNT,
    USER_ID_PATTERN,
    Level,
    RenewalPeriod,
    check_amount,
    check_balance,
    check_plan,
    check_reason,
    check_user_id,
)
from ledger.domain.state import FOLD_VERSION, Cause, InvariantViolation, UserState
from ledger.domain.user import User

__all__ = [
    "DEFAULT_FREE_CHAT_MESSAGES",
    "DEFAULT_FREE_CREDITS",
    "EVENT_TYPES",
    "FOLD_VERSION",
    "MAX_AMOUNT",
    "MAX_BALANCE",
    "MAX_REASON_LENGTH",
    "MIN_AMOUNT",
    "USER_ID_PATTERN",
    "Balance",
    "Cause",
    "InvariantViolation",
    "Level",
    "RenewalPeriod",
    "User",
    "UserEvent",
    "UserState",
    "check_amount",
    "check_balance",
    "check_plan",
    "check_reason",
    "check_user_id",
    "fold",
]
