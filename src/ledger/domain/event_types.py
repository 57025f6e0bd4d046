"""The names the API, the event log and webhooks give the user's events."""

from __future__ import annotations

from ledger.domain.events import UserEvent
from ledger.domain.user import User

#: The names the API and the event log show, by event class.
EVENT_TYPES: dict[type[UserEvent], str] = {
    cls: cls.__name__
    for cls in (
        User.UserRegistered,
        User.UserImported,
        User.PlanChanged,
        User.CreditsGranted,
        User.CreditsSpent,
        User.CreditsExpired,
        User.ChatMessagesGranted,
        User.ChatMessagesSpent,
        User.ChatMessagesExpired,
        User.AllowanceSet,
        User.AllowanceRemoved,
        User.AllowanceGranted,
        User.HoldPlaced,
        User.HoldSettled,
        User.HoldReleased,
        User.HoldExpired,
        User.PurchaseCompleted,
        User.PurchaseRefunded,
        User.PurchaseDisputed,
        User.DisputeReinstated,
    )
}


def event_type(event: UserEvent) -> str:
    """The name of `event`'s type (its class's, for one not listed)."""
    return EVENT_TYPES.get(type(event), type(event).__name__)
