"""Users and their events on the wire: requests, responses, problems."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.http.schemas.common import (
    Amount,
    BalanceValue,
    Level,
    LevelIn,
    Priority,
    Reason,
    RenewalIn,
    RenewalPeriod,
    Strict,
    Time,
    TimeOut,
    UserId,
)
from ledger.domain import DEFAULT_PRIORITY


class RegisterRequest(Strict):
    id: UserId

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"id": "user_42"}]})


class AmountRequest(Strict):
    amount: Amount
    reason: Reason = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"amount": 1, "reason": "chat completion"}]},
    )


class GrantRequest(AmountRequest):
    expires_at: Time | None = Field(
        None,
        description="When what remains of the grant expires: RFC 3339 with an offset, in "
        "the future, at most 100 years ahead. None: never.",
    )
    priority: Priority = DEFAULT_PRIORITY

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"amount": 100, "reason": "November promotion"},
                {
                    "amount": 50,
                    "reason": "promotion",
                    "expires_at": "2026-12-31T23:59:59Z",
                    "priority": 10,
                },
            ]
        },
    )


class PlanRequest(Strict):
    level: LevelIn
    renewal_period: RenewalIn | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"level": "paid", "renewal_period": "lifetime"}]},
    )


class UserOut(BaseModel):
    id: str
    level: Level
    renewal_period: RenewalPeriod | None
    free_credits: BalanceValue = Field(
        description="Available: granted, less spent, expired and held. NULL for a user "
        "imported from before credits."
    )
    free_chat_messages: BalanceValue
    free_credits_held: int = Field(description="What open holds reserve.")
    free_chat_messages_held: int
    free_credits_next_expiry_at: TimeOut | None = Field(
        description="When a remainder of free_credits expires next (null: nothing will)."
    )
    free_credits_next_expiry_amount: int | None = Field(description="How much expires then.")
    free_chat_messages_next_expiry_at: TimeOut | None
    free_chat_messages_next_expiry_amount: int | None
    version: int = Field(description="The number of events in the user's stream.")
    position: int = Field(description="Global position of the last event applied.")
    updated_at: str = Field(description="When that event was recorded (RFC 3339, UTC).")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "user_42",
                    "level": "free",
                    "renewal_period": None,
                    "free_credits": 9,
                    "free_chat_messages": 20,
                    "free_credits_held": 0,
                    "free_chat_messages_held": 0,
                    "free_credits_next_expiry_at": None,
                    "free_credits_next_expiry_amount": None,
                    "free_chat_messages_next_expiry_at": None,
                    "free_chat_messages_next_expiry_amount": None,
                    "version": 2,
                    "position": 1041,
                    "updated_at": "2026-11-26T12:00:00.123456Z",
                }
            ]
        }
    )


class EventMetadata(BaseModel):
    actor_role: str | None = Field(
        description="Role of the API key that caused it (`time` for what time brought: "
        "an expiry, an allowance's period)."
    )
    actor_key_id: str | None = Field(description="Id of that key (never the key).")
    request_id: str | None
    idempotency_key: str | None

    model_config = ConfigDict(extra="allow")


#: Every event type the history shows.
EventType = Literal[
    "UserRegistered",
    "UserImported",
    "PlanChanged",
    "CreditsGranted",
    "CreditsSpent",
    "CreditsExpired",
    "ChatMessagesGranted",
    "ChatMessagesSpent",
    "ChatMessagesExpired",
    "AllowanceSet",
    "AllowanceRemoved",
    "AllowanceGranted",
    "HoldPlaced",
    "HoldSettled",
    "HoldReleased",
    "HoldExpired",
]


class EventOut(BaseModel):
    id: str
    type: EventType
    user_id: str
    version: int
    position: int
    recorded_at: str = Field(description="RFC 3339, UTC, to the microsecond.")
    data: dict[str, Any]
    metadata: EventMetadata


class CommandOut(BaseModel):
    """The event a command recorded, and the user's state right after it."""

    event: EventOut
    user: UserOut


class HistoryItem(EventOut):
    user: UserOut = Field(description="The user's state right after this event.")


class HistoryPage(BaseModel):
    items: list[HistoryItem]
    next: int | None = Field(description="Pass as after_version for the next page.")


class EventPage(BaseModel):
    items: list[EventOut]
    next: int | None = Field(description="Pass as after for the next page.")


class Difference(BaseModel):
    field: str
    projected: Any
    replayed: Any


class AuditOut(BaseModel):
    consistent: bool
    projected: UserOut | None
    replayed: UserOut | None
    differences: list[Difference]
    position: int = Field(description="The projection position the audit compared at.")


class RebuildProgress(BaseModel):
    phase: str
    position: int | None = None
    target: int | None = None
    events: int | None = None
    users: int | None = None
    events_per_second: float | None = None
    eta_seconds: float | None = None
    error: str | None = None


class ProjectionOut(BaseModel):
    name: str
    version: str
    position: int
    head: int
    lag: int
    status: Literal["running", "rebuilding", "stopped", "failed"]
    error: dict[str, Any] | None
    rebuild: RebuildProgress | None = None
    rebuild_requested: bool = False


class ProjectionList(BaseModel):
    items: list[ProjectionOut]


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None
    # With insufficient-balance: the facts behind the refusal.
    balance: str | None = None
    requested: int | None = None
    available: int | None = None
    held: int | None = None
    shortfall: int | None = None
    next_allowance_at: str | None = Field(
        None, description="When an allowance next resets this balance (null: none)."
    )
    expiring: dict[str, Any] | None = Field(
        None, description="What expires next: `{at, amount}`, or null."
    )
