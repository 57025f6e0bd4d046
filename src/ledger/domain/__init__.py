"""The domain: the rules (`rules`), the two balances (`balance`), grants,
holds and allowances (`grants`, `holds`, `allowances`), a user's state
(`state`), their events and the one fold (`events`, `balance_events`,
`hold_events`), what time brings (`due`), explanations (`explain`) and the
User aggregate (`user`). Nothing here knows of a database or of HTTP.

Stored events name their classes `ledger.domain:User.<event>`: `User` is
importable from here for the library to resolve them.
"""

from ledger.domain.allowances import Allowance, Period
from ledger.domain.balance import Balance
from ledger.domain.event_types import EVENT_TYPES, event_type
from ledger.domain.events import UserEvent, fold
from ledger.domain.grants import DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY, Grant, Source
from ledger.domain.holds import DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS, MIN_TTL_SECONDS, Hold
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
from ledger.domain.user import TIME, User, as_of

__all__ = [
    "DEFAULT_FREE_CHAT_MESSAGES",
    "DEFAULT_FREE_CREDITS",
    "DEFAULT_PRIORITY",
    "DEFAULT_TTL_SECONDS",
    "EVENT_TYPES",
    "FOLD_VERSION",
    "MAX_AMOUNT",
    "MAX_BALANCE",
    "MAX_PRIORITY",
    "MAX_REASON_LENGTH",
    "MAX_TTL_SECONDS",
    "MIN_AMOUNT",
    "MIN_PRIORITY",
    "MIN_TTL_SECONDS",
    "TIME",
    "USER_ID_PATTERN",
    "Allowance",
    "Balance",
    "Cause",
    "Grant",
    "Hold",
    "InvariantViolation",
    "Level",
    "Period",
    "RenewalPeriod",
    "Source",
    "User",
    "UserEvent",
    "UserState",
    "as_of",
    "check_amount",
    "check_balance",
    "check_plan",
    "check_reason",
    "check_user_id",
    "event_type",
    "fold",
]
