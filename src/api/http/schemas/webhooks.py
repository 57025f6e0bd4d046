"""Webhook endpoints and their deliveries on the wire."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from api.http.schemas.common import Strict, Time, TimeOut
from api.integrations.webhooks.safety import MAX_URL_LENGTH
from ledger.domain import MAX_BALANCE
from projections.webhooks.messages import ALL_TYPES

EventTypeName = Literal[(*ALL_TYPES, "*")]  # type: ignore[valid-type]
EventTypes = Annotated[
    list[EventTypeName],
    Field(
        min_length=1,
        max_length=len(ALL_TYPES) + 1,
        description='The message types to send, or `["*"]` for every one.',
    ),
]
Url = Annotated[
    StrictStr,
    Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description="Where to POST: https (http with LEDGER_WEBHOOKS_ALLOW_HTTP=1), at a "
        "public address (LEDGER_WEBHOOKS_ALLOW_PRIVATE=1 allows private ones).",
    ),
]
Description = Annotated[StrictStr | None, Field(max_length=500, pattern=r"^[^\x00]*$")]
Threshold = Annotated[
    StrictInt | None,
    Field(
        ge=0,
        le=MAX_BALANCE,
        description="Send `balance.low` when an available balance falls below this.",
    ),
]
DeliveryStatus = Literal["pending", "succeeded", "failed"]

_EXAMPLE: dict[str, Any] = {
    "url": "https://app.example.com/ledger-webhooks",
    "event_types": ["*"],
    "description": "the app",
    "low_balance_threshold": 5,
}


class EndpointRequest(Strict):
    url: Url
    event_types: EventTypes
    description: Description = None
    low_balance_threshold: Threshold = None

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]})


class EndpointPatch(Strict):
    url: Url | None = None
    event_types: EventTypes | None = None
    disabled: StrictBool | None = None
    description: Description = None
    low_balance_threshold: Threshold = None

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"disabled": False}]})


class RecoverRequest(Strict):
    since: Time = Field(description="Send again every message about an event recorded since.")

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"since": "2026-12-01T00:00:00Z"}]}
    )


class EndpointOut(BaseModel):
    id: str
    url: str
    event_types: list[str]
    description: str | None
    low_balance_threshold: int | None
    disabled: bool
    disabled_reason: str | None = Field(
        description="Why: `disabled by an operator`, `the endpoint answered 410 Gone`, "
        "`failing for five days`."
    )
    failing_since: TimeOut | None = Field(description="Since when every attempt has failed.")
    previous_secret_until: TimeOut | None = Field(
        description="Until when the secret before the last rotation signs too."
    )
    created_at: TimeOut
    updated_at: TimeOut


class EndpointWithSecret(EndpointOut):
    secret: str | None = Field(
        description="`whsec_...`: shown once, in the answer that made it. A retry with the "
        "same Idempotency-Key answers null here: rotate the secret if it was lost."
    )


class EndpointPage(BaseModel):
    items: list[EndpointOut]
    next: str | None = Field(description="Pass as after for the next page.")


class AttemptOut(BaseModel):
    attempt: int
    attempted_at: TimeOut
    http_status: int | None
    error: str | None
    duration_ms: float


class DeliveryOut(BaseModel):
    id: str = Field(description="The message's `webhook-id`, the same on every attempt.")
    endpoint_id: str
    type: str
    user_id: str
    position: int
    status: DeliveryStatus
    event_at: TimeOut
    queued_at: TimeOut
    next_attempt_at: TimeOut | None
    delivered_at: TimeOut | None
    attempts: list[AttemptOut]


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next: str | None = Field(description="Pass as after for the next page.")


class RecoverOut(BaseModel):
    endpoint_id: str
    since: TimeOut
    queued: int = Field(description="Messages queued again.")
