"""Stripe events in, ledger commands out.

A delivery is checked first: its `Stripe-Signature` verified by the official
`stripe` package on the raw body, against each secret of
LEDGER_STRIPE_WEBHOOK_SECRETS (a rotation has two), within 300 s of now both
ways (the package refuses only old timestamps; a future one is refused here,
by the ledger's clock). Only then is it parsed (by the package, into a
`stripe.Event`) and read, field by field, into the one command that records
it, `ApplyStripeEvent`: a purchase paid, a refund or a dispute of one, or an
event the ledger does not act on. Line items are not in a session's events:
the app names the SKU in the session's `metadata.ledger_sku`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import stripe
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, ValidationError

from api.integrations.catalog import Catalog
from ledger.commands import NO_USER, ApplyStripeEvent, Delivery, Paid, Unused
from ledger.domain import check_user_id
from ledger.domain.purchases import (
    MAX_MONEY,
    Change,
    DisputeReinstated,
    DisputeWithdrawn,
    Refunds,
)
from ledger.errors import InvalidCommand

TOLERANCE_SECONDS = 300

#: Where the app puts the SKU and the user, in the session's metadata (and the
#: payment intent's: `payment_intent_data.metadata`).
SKU_KEY = "ledger_sku"
USER_KEY = "ledger_user_id"

#: The event types the ledger acts on (any other is recorded as ignored).
FULFILLING = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
REFUNDING = ("refund.created", "refund.updated", "charge.refunded")
DISPUTING = ("charge.dispute.funds_withdrawn", "charge.dispute.funds_reinstated")
HANDLED = frozenset((*FULFILLING, *REFUNDING, *DISPUTING))


class InvalidSignature(Exception):
    """The delivery is not signed by Stripe with one of our secrets, now."""


class InvalidPayload(Exception):
    """Signed, but not a Stripe event of a shape the ledger reads."""


# -- the shapes read (only the fields the ledger uses; Stripe sends many more) ---------


def _id_of(value: Any) -> Any:
    """An expandable field: an id, or the object it names (then its id)."""
    return value.get("id") if isinstance(value, dict) else value


Id = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]
Expandable = Annotated[Id | None, BeforeValidator(_id_of)]
Money = Annotated[StrictInt, Field(ge=0, le=MAX_MONEY)]
Text = Annotated[str, Field(max_length=500, pattern=r"^[^\x00]*$")]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Event(_Shape):
    id: Id
    type: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-z0-9_.]+$")]
    data: dict[str, Any]


class _Session(_Shape):
    object: Literal["checkout.session"]
    id: Id
    mode: Text | None = None
    payment_status: Text | None = None
    amount_total: Money | None = None
    currency: Text | None = None
    client_reference_id: Text | None = None
    metadata: dict[str, Text] | None = None
    payment_intent: Expandable = None


class _Refund(_Shape):
    object: Literal["refund"]
    id: Id
    amount: Money
    currency: Text | None = None
    status: Text | None = None
    payment_intent: Expandable = None


class _RefundList(_Shape):
    data: list[_Refund] = Field(default_factory=list, max_length=1000)


class _Charge(_Shape):
    object: Literal["charge"]
    id: Id
    amount_refunded: Money
    currency: Text | None = None
    payment_intent: Expandable = None
    #: Listed only when the endpoint expands it (since API version 2022-11-15).
    refunds: _RefundList | None = None


class _Dispute(_Shape):
    object: Literal["dispute"]
    id: Id
    amount: Money
    payment_intent: Expandable = None


# -- the webhook ------------------------------------------------------------------------


@dataclass(frozen=True)
class StripeWebhook:
    """The secrets deliveries are signed with, and the catalogue they buy from."""

    secrets: tuple[str, ...]
    catalog: Catalog

    @classmethod
    def of(cls, secrets: str, catalog: Catalog) -> StripeWebhook:
        return cls(tuple(s.strip() for s in secrets.split(",") if s.strip()), catalog)

    def command(self, payload: bytes, header: str | None, now: datetime) -> ApplyStripeEvent:
        """The command that records a delivery, once its signature is checked."""
        return self.read(self.verify(payload, header, now))

    def verify(self, payload: bytes, header: str | None, now: datetime) -> dict[str, Any]:
        """The event a delivery carries, as plain JSON; InvalidSignature unless
        it is signed with one of the secrets, within the tolerance of `now`."""
        if not header:
            raise InvalidSignature("no Stripe-Signature header")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidSignature(
                "the body is not UTF-8, so it is not what Stripe signed"
            ) from None
        for secret in self.secrets:
            try:
                event = stripe.Webhook.construct_event(text, header, secret, TOLERANCE_SECONDS)
            except stripe.SignatureVerificationError:
                continue
            except Exception as e:  # signed, but not JSON, or no event
                raise InvalidPayload(f"the body is not a Stripe event: {type(e).__name__}") from e
            if _timestamp(header) > now.timestamp() + TOLERANCE_SECONDS:
                raise InvalidSignature("the signature's timestamp is more than 300 s ahead")
            found: dict[str, Any] = event.to_dict()
            return found
        raise InvalidSignature(
            "the Stripe-Signature matches none of the secrets, or its timestamp is more than "
            "300 s old"
        )

    def read(self, event: dict[str, Any]) -> ApplyStripeEvent:
        """The command that records `event`; InvalidPayload if its shape is not
        one the ledger reads."""
        try:
            envelope = _Event.model_validate(event)
            kind = envelope.type
            thing = envelope.data.get("object")
            if kind in FULFILLING or kind.startswith("checkout.session."):
                return self._session(envelope, _Session.model_validate(thing))
            if kind in ("refund.created", "refund.updated"):
                return _refund(envelope, _Refund.model_validate(thing))
            if kind == "charge.refunded":
                return _charge(envelope, _Charge.model_validate(thing))
            if kind in DISPUTING:
                return _dispute(envelope, _Dispute.model_validate(thing))
        except ValidationError as e:
            raise InvalidPayload(_summary(e)) from e
        return _unused(
            Delivery(envelope.id, kind, _object_id(thing)), "ignored", _not_acted_on(kind)
        )

    def _session(self, event: _Event, session: _Session) -> ApplyStripeEvent:
        delivery = Delivery(event.id, event.type, session.id, session.payment_intent)
        if event.type not in FULFILLING:
            return _unused(delivery, "ignored", _not_acted_on(event.type))
        if event.type == FULFILLING[0] and session.payment_status != "paid":
            return _unused(
                delivery,
                "ignored",
                f"payment_status is {session.payment_status!r}: fulfilled when the payment "
                "succeeds (checkout.session.async_payment_succeeded)",
            )
        metadata = session.metadata or {}
        user_id = session.client_reference_id or metadata.get(USER_KEY)
        sku = metadata.get(SKU_KEY)
        if session.mode != "payment":
            return _unused(delivery, "rejected", "only one-time payments (mode 'payment') are sold")
        if sku is None:
            return _unused(delivery, "rejected", f"the session has no metadata.{SKU_KEY}")
        if session.amount_total is None or session.currency is None:
            return _unused(delivery, "rejected", "the session has no amount_total or currency")
        try:
            user_id = check_user_id(user_id)
        except InvalidCommand as e:
            return _unused(delivery, "rejected", f"client_reference_id: {e.detail}")
        paid = Paid(session.id, sku, self.catalog.get(sku), session.amount_total, session.currency)
        return ApplyStripeEvent(user_id, delivery, paid)


def _refund(event: _Event, refund: _Refund) -> ApplyStripeEvent:
    delivery = Delivery(event.id, event.type, refund.id, refund.payment_intent)
    if refund.status != "succeeded":
        reason = f"refund {refund.id} is {refund.status!r}: counted once it succeeds"
        return _unused(delivery, "ignored", reason)
    return _change(delivery, Refunds(((refund.id, refund.amount),), None, refund.currency))


def _charge(event: _Event, charge: _Charge) -> ApplyStripeEvent:
    delivery = Delivery(event.id, event.type, charge.id, charge.payment_intent)
    listed = charge.refunds.data if charge.refunds is not None else []
    named = tuple((r.id, r.amount) for r in listed if r.status == "succeeded")
    return _change(delivery, Refunds(named, charge.amount_refunded, charge.currency))


def _dispute(event: _Event, dispute: _Dispute) -> ApplyStripeEvent:
    delivery = Delivery(event.id, event.type, dispute.id, dispute.payment_intent)
    kind = DisputeWithdrawn if event.type == DISPUTING[0] else DisputeReinstated
    return _change(delivery, kind(dispute.id, dispute.amount))


def _change(delivery: Delivery, change: Change) -> ApplyStripeEvent:
    if delivery.payment_intent is None:
        return _unused(delivery, "rejected", f"{delivery.object_id} names no payment intent")
    return ApplyStripeEvent(NO_USER, delivery, change)


def _unused(delivery: Delivery, outcome: str, reason: str) -> ApplyStripeEvent:
    return ApplyStripeEvent(NO_USER, delivery, Unused(outcome, reason))


def _not_acted_on(kind: str) -> str:
    return f"the ledger does not act on {kind}"


def _object_id(thing: Any) -> str:
    """The id of an event's object of a type the ledger does not read, if it has one."""
    found = thing.get("id") if isinstance(thing, dict) else None
    return found if isinstance(found, str) and _PRINTABLE.fullmatch(found) else ""


_PRINTABLE = re.compile(r"^[\x21-\x7e]{1,255}$")


def _timestamp(header: str) -> int:
    """The `t` of a Stripe-Signature header, read as the package reads it."""
    items = [item.split("=", 2) for item in header.split(",")]
    try:
        return int(next(item[1] for item in items if item[0] == "t"))
    except (StopIteration, IndexError, ValueError):
        raise InvalidSignature("the Stripe-Signature has no timestamp") from None


def _summary(error: ValidationError) -> str:
    parts = []
    for e in error.errors()[:3]:
        where = ".".join(str(p) for p in e.get("loc", ())) or "event"
        parts.append(f"{where}: {e.get('msg', '')}")
    return "the event is not of a shape the ledger reads: " + "; ".join(parts)
