"""Shapes every part of the wire format shares."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)

from ledger.domain import (
    MAX_AMOUNT,
    MAX_BALANCE,
    MAX_PRIORITY,
    MAX_REASON_LENGTH,
    MIN_AMOUNT,
    MIN_PRIORITY,
    USER_ID_PATTERN,
)
from ledger.times import parse_timestamp

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
Priority = Annotated[
    StrictInt,
    Field(
        ge=MIN_PRIORITY,
        le=MAX_PRIORITY,
        description="0 to 100: grants of a lower priority are consumed first (default 50).",
    ),
]
BalanceName = Literal["free_credits", "free_chat_messages"]
LevelIn = Literal["free", "paid"]
RenewalIn = Literal["lifetime"]
Level = Literal["free", "paid", "basic", "pro"]
RenewalPeriod = Literal["lifetime", "monthly"]
BalanceValue = Annotated[int | None, Field(ge=0, le=MAX_BALANCE)]


def _rfc3339(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("give a time as an RFC 3339 string, such as 2026-01-31T12:00:00Z")
    return parse_timestamp(value)


#: A strict RFC 3339 time with an offset (pydantic's own datetime takes Unix
#: times and more).
Time = Annotated[
    datetime,
    BeforeValidator(_rfc3339),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
#: A time as the ledger shows it: RFC 3339, UTC, to the microsecond.
TimeOut = Annotated[str, Field(description="RFC 3339, UTC, to the microsecond.")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
