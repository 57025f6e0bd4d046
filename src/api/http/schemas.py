"""The wire format: request and response shapes, documented in the OpenAPI."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from ledger.domain import (
    MAX_AMOUNT,
    MAX_BALANCE,
    MAX_REASON_LENGTH,
    MIN_AMOUNT,
    USER_ID_PATTERN,
)

UserId = Annotated[
    str,
    Field(
        pattern=USER_ID_PATTERN,
        min_length=1,
        max_length=64,
        description="1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-'.",
        examples=["user_42"],
    ),
]
Amount = Annotated[
    StrictInt,
    Field(
        ge=MIN_AMOUNT,
        le=MAX_AMOUNT,
        description="A whole number from 1 to 1,000,000, written without a decimal point.",
        examples=[1],
    ),
]
Reason = Annotated[
    StrictStr | None,
    Field(
        max_length=MAX_REASON_LENGTH,
        pattern=r"^[^\x00]*$",
        description="Why, for the history (optional).",
        examples=["chat completion"],
    ),
]
LevelIn = Literal["free", "paid"]
RenewalIn = Literal["lifetime"]
Level = Literal["free", "paid", "basic", "pro"]
RenewalPeriod = Literal["lifetime", "monthly"]
Balance = Annotated[int | None, Field(ge=0, le=MAX_BALANCE)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterRequest(_Strict):
    id: UserId

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"id": "user_42"}]})


class AmountRequest(_Strict):
    amount: Amount
    reason: Reason = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"amount": 1, "reason": "chat completion"}]},
    )


class PlanRequest(_Strict):
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
    free_credits: Balance = Field(description="NULL for a user imported from before credits.")
    free_chat_messages: Balance
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
                    "version": 2,
                    "position": 1041,
                    "updated_at": "2026-11-26T12:00:00.123456Z",
                }
            ]
        }
    )


class EventMetadata(BaseModel):
    actor_role: str | None = Field(description="Role of the API key that caused it.")
    actor_key_id: str | None = Field(description="Id of that key (never the key).")
    request_id: str | None
    idempotency_key: str | None


class EventOut(BaseModel):
    id: str
    type: Literal[
        "UserRegistered",
        "UserImported",
        "CreditsGranted",
        "CreditsSpent",
        "ChatMessagesGranted",
        "ChatMessagesSpent",
        "PlanChanged",
    ]
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
