"""Stripe's deliveries on the wire: what the webhook answers, what arrived."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from api.http.schemas.common import TimeOut

StripeOutcome = Literal["applied", "ignored", "rejected", "waiting"]


class StripeDeliveryOut(BaseModel):
    """What became of a delivery (for the same event again: of its first)."""

    id: str = Field(description="The Stripe event's id (`evt_...`).")
    type: str = Field(description="Its type, such as `checkout.session.completed`.")
    object_id: str = Field(description="The object it is about: `cs_...`, `re_...`, `du_...`.")
    status: StripeOutcome = Field(
        description="`applied` (its ledger events are recorded), `ignored` (nothing to do: "
        "applied already, or not acted on), `rejected` (refused for good: a price that is not "
        "the catalogue's, say), `waiting` (a refund or dispute of a payment whose purchase has "
        "not arrived: applied when it does)."
    )
    error: str | None = Field(description="Why, when it is not applied.")
    user_id: str | None = Field(description="The user it concerns, once known.")


class StripeEventOut(StripeDeliveryOut):
    payment_intent: str | None
    received_at: TimeOut
    updated_at: TimeOut = Field(description="When its status was last set.")


class StripeEventPage(BaseModel):
    items: list[StripeEventOut]
    next: str | None = Field(description="Pass as after for the next page.")
