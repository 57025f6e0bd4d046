"""Holds, grants and allowances on the wire."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from api.http.schemas.common import Amount, BalanceName, Reason, Strict, Time, TimeOut
from api.http.schemas.users import EventOut, UserOut
from ledger.domain import DEFAULT_TTL_SECONDS, MAX_AMOUNT, MAX_TTL_SECONDS, MIN_TTL_SECONDS

TtlSeconds = Annotated[
    StrictInt,
    Field(
        ge=MIN_TTL_SECONDS,
        le=MAX_TTL_SECONDS,
        description="Seconds until the hold expires (counts as released): 1 to 86,400.",
    ),
]
SettleAmount = Annotated[
    StrictInt,
    Field(ge=0, le=MAX_AMOUNT, description="What the reply cost: 0 up to the held amount."),
]
HoldStatus = Literal["open", "settled", "released", "expired"]
GrantStatus = Literal["active", "expired", "used"]
GrantSource = Literal["registration", "import", "grant", "allowance", "purchase"]
PeriodName = Literal["day", "week", "month"]


class HoldRequest(Strict):
    amount: Amount
    reason: Reason = None
    ttl_seconds: TtlSeconds = DEFAULT_TTL_SECONDS

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"amount": 20, "reason": "chat reply", "ttl_seconds": 120}]
        },
    )


class SettleRequest(Strict):
    amount: SettleAmount
    reason: Reason = None

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"amount": 7, "reason": "chat reply"}]}
    )


class ReleaseRequest(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{}]})


class HoldOut(BaseModel):
    id: str
    user_id: str
    balance: BalanceName
    amount: int
    status: HoldStatus = Field(
        description="`expired` from `expires_at` on, whether or not its HoldExpired is "
        "recorded yet."
    )
    reason: str | None
    created_at: TimeOut
    expires_at: TimeOut
    settled_amount: int | None
    closed_at: TimeOut | None


class HoldCommandOut(BaseModel):
    """The hold, the event the command recorded, and the user right after it."""

    hold: HoldOut
    event: EventOut
    user: UserOut


class HoldPage(BaseModel):
    items: list[HoldOut]
    next: str | None = Field(description="Pass as after for the next page.")


class GrantOut(BaseModel):
    id: str
    balance: BalanceName
    amount: int = Field(description="What was granted.")
    remaining: int = Field(description="What of it is available now.")
    held: int = Field(description="What of it open holds reserve.")
    spent: int
    expired: int
    clawed_back: int = Field(
        description="What refunds and disputes of the purchase that made it took back."
    )
    priority: int
    expires_at: TimeOut | None
    granted_at: TimeOut
    reason: str | None
    source: GrantSource
    status: GrantStatus = Field(
        description="`active` while something remains or is held; `expired` from "
        "`expires_at` on; `used` once all of it was spent (or clawed back)."
    )


class GrantPage(BaseModel):
    items: list[GrantOut]
    next: str | None = Field(description="Pass as after for the next page.")


class AllowanceRequest(Strict):
    amount: Amount
    period: PeriodName
    anchor: Time | None = Field(
        None,
        description="When the periods start from (RFC 3339 with an offset; default: now). "
        "Months are calendar months, the anchor's day clamped to the month's end.",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"amount": 20, "period": "month"},
                {"amount": 5, "period": "day", "anchor": "2026-12-01T00:00:00Z"},
            ]
        },
    )


class AllowanceOut(BaseModel):
    balance: BalanceName
    amount: int
    period: PeriodName
    anchor: TimeOut
    period_start: TimeOut | None = Field(description="The current period, once granted.")
    period_end: TimeOut | None
    next_reset_at: TimeOut = Field(description="When the balance is next reset.")
    grant_id: str | None = Field(description="The current period's grant.")


class AllowanceList(BaseModel):
    items: list[AllowanceOut]


class ExplainedHold(BaseModel):
    id: str
    amount: int
    reason: str | None
    expires_at: TimeOut


class ExplainedGrant(BaseModel):
    id: str
    remaining: int
    held: int
    priority: int
    expires_at: TimeOut | None
    source: GrantSource
    reason: str | None


class ExplainedAllowance(BaseModel):
    amount: int
    period: PeriodName
    next_reset_at: TimeOut


class ExplainedBalance(BaseModel):
    available: int | None
    held: int
    holds: list[ExplainedHold]
    grants: list[ExplainedGrant] = Field(description="Active grants, in consumption order.")
    next_expiry: dict[str, Any] | None = Field(description="`{at, amount}`, or null.")
    allowance: ExplainedAllowance | None
    summary: str = Field(description="The balance in one sentence.")


class Change(BaseModel):
    position: int
    version: int
    recorded_at: TimeOut
    type: str
    sentence: str = Field(description="What it did, and who did it.")
    request_id: str | None


class ExplainOut(BaseModel):
    user_id: str
    as_of: TimeOut
    version: int
    position: int
    level: str
    renewal_period: str | None
    balances: dict[BalanceName, ExplainedBalance]
    recent: list[Change] = Field(description="The latest changes, newest first.")


class ChainHeadOut(BaseModel):
    position: int = Field(description="The last chained event's position (0: none yet).")
    hash: str = Field(description="Its link: SHA-256, in hex.")
    recorded_at: TimeOut | None
