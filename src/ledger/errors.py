"""The ledger's exceptions: one small hierarchy, mapped once to problem+json by the API."""

from __future__ import annotations

from typing import Any


class LedgerError(Exception):
    """A command was refused, or could not be carried out. `code` names the reason."""

    code = "ledger-error"

    def __init__(
        self, detail: str, *, replayed: bool = False, facts: dict[str, Any] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        #: The stored outcome of an earlier request with the same idempotency key.
        self.replayed = replayed
        #: What a client needs to act on the refusal (JSON-ready), beside `detail`.
        self.facts = facts


class InvalidCommand(LedgerError):
    """The command breaks a rule of its own shape: an amount, an id, a level."""

    code = "invalid-command"


class UserNotFound(LedgerError):
    code = "user-not-found"


class UserExists(LedgerError):
    code = "user-exists"


class InsufficientBalance(LedgerError):
    code = "insufficient-balance"


class BalanceLimit(LedgerError):
    code = "balance-limit"


class HoldNotFound(LedgerError):
    code = "hold-not-found"


class HoldClosed(LedgerError):
    """The hold was settled or released already (the detail says how)."""

    code = "hold-closed"


class HoldHasExpired(LedgerError):
    """The hold reached its expiry open: it counts as released."""

    code = "hold-expired"


class SettleExceedsHold(LedgerError):
    code = "settle-exceeds-hold"


class HoldExists(LedgerError):
    """A placement names a hold that exists (its idempotency key was pruned,
    and it was sent again)."""

    code = "hold-exists"


class NothingDue(LedgerError):
    """Time has brought nothing to record for the user (the expiry worker's
    answer for a user it need not have woken)."""

    code = "nothing-due"


class NotApplied(LedgerError):
    """A payment provider's delivery that changes no user, and why: `outcome`
    is how the received event is recorded."""

    outcome = "ignored"


class Ignored(NotApplied):
    """Nothing to do: what it brings was applied already, or is not acted on."""

    code = "stripe-ignored"


class Rejected(NotApplied):
    """Refused for good: a price that is not the catalogue's, an unknown SKU."""

    code = "stripe-rejected"
    outcome = "rejected"


class Waiting(NotApplied):
    """About a payment whose purchase has not arrived yet: kept, and applied
    when it arrives."""

    code = "stripe-waiting"
    outcome = "waiting"


class AlreadyReceived(LedgerError):
    """The same delivery again (its event id was recorded): `facts` is what
    became of it."""

    code = "stripe-already-received"


class IdempotencyKeyReused(LedgerError):
    """The key was first used for a different request."""

    code = "idempotency-key-reused"


class IdempotencyKeyInUse(LedgerError):
    """The first request with this key has not finished yet."""

    code = "idempotency-key-in-use"


class HistoryUnreadable(LedgerError):
    """The user's stream holds an event this release cannot read (one recorded by
    a newer release, during a rolling deploy, say). Another instance may serve it."""

    code = "history-unreadable"

    @classmethod
    def of(
        cls, user_id: str, version: int, topic: str, error: Exception, *, applied: bool = False
    ) -> HistoryUnreadable:
        """Why `user_id`'s event at `version` cannot be read (or, once read,
        `applied`) by this release."""
        what = "applied" if applied else "read"
        return cls(
            f"{user_id!r}'s event {version} ({topic}) cannot be {what} by this release: {error}"
        )


class DatabaseUnavailable(LedgerError):
    """PostgreSQL could not be reached, or the transaction's outcome is unknown."""

    code = "database-unavailable"


#: Refusals that are a command's own outcome: recorded against an idempotency key
#: and replayed on a retry, like a success. Everything else is retried afresh.
DOMAIN_REFUSALS: tuple[type[LedgerError], ...] = (
    UserNotFound,
    UserExists,
    InsufficientBalance,
    BalanceLimit,
    HoldNotFound,
    HoldClosed,
    HoldHasExpired,
    SettleExceedsHold,
    HoldExists,
)

REFUSALS_BY_CODE: dict[str, type[LedgerError]] = {cls.code: cls for cls in DOMAIN_REFUSALS}
