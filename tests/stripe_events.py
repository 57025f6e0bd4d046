"""Stripe events of the real shape, signed as Stripe signs them.

The objects carry the fields Stripe's API reference gives a Checkout Session,
a Refund, a Charge and a Dispute (more than the ledger reads, as Stripe sends
them), in a v1 event envelope; `parsed` checks that the `stripe` package reads
one as a `stripe.Event`. `signed` is the body and its Stripe-Signature header,
made by the package's own `generate_signature_header`."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import stripe

SECRET = "whsec_test_0d5bbf0b3a5c4e2f9a7e1c6b8d4f2a90"
OLD_SECRET = "whsec_test_5e1f0c2d4b6a48e9b3c7d1a2f6e8c4b0"
API_VERSION = "2025-09-30.clover"

CATALOG_TOML = """
[sku.lifetime]
amount = 4900            # smallest currency unit
currency = "usd"
plan = { level = "paid", renewal_period = "lifetime" }
credits = 500

[sku.credits_100]
amount = 900
currency = "usd"
credits = 100
credits_expire_after_days = 365
priority = 60

[sku.plan_only]
amount = 2900
currency = "usd"
plan = { level = "paid", renewal_period = "lifetime" }
"""


def new_id(prefix: str) -> str:
    return f"{prefix}_test_{uuid.uuid4().hex[:24]}"


def event(type_: str, obj: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    """A v1 event (a snapshot event) about `obj`."""
    return {
        "id": event_id or new_id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": int(time.time()),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
    }


def checkout_session(
    session_id: str,
    user_id: str | None,
    sku: str | None,
    amount: int,
    *,
    payment_intent: str,
    currency: str = "usd",
    payment_status: str = "paid",
    mode: str = "payment",
) -> dict[str, Any]:
    metadata = {} if sku is None else {"ledger_sku": sku}
    return {
        "id": session_id,
        "object": "checkout.session",
        "adaptive_pricing": {"enabled": False},
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": amount,
        "amount_total": amount,
        "automatic_tax": {"enabled": False, "liability": None, "status": None},
        "billing_address_collection": None,
        "cancel_url": "https://app.example.com/pricing",
        "client_reference_id": user_id,
        "client_secret": None,
        "consent": None,
        "consent_collection": None,
        "created": int(time.time()) - 60,
        "currency": currency,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": "cus_test_R2d2C3po4Bb8",
        "customer_creation": "if_required",
        "customer_details": {
            "address": {"country": "FR", "postal_code": None},
            "email": "ada@example.com",
            "name": "Ada Lovelace",
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        },
        "customer_email": None,
        "expires_at": int(time.time()) + 86_400,
        "invoice": None,
        "livemode": False,
        "locale": None,
        "metadata": metadata,
        "mode": mode,
        "payment_intent": payment_intent,
        "payment_link": None,
        "payment_method_collection": "if_required",
        "payment_method_types": ["card"],
        "payment_status": payment_status,
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": "complete",
        "submit_type": None,
        "subscription": None,
        "success_url": "https://app.example.com/thanks?session_id={CHECKOUT_SESSION_ID}",
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted",
        "url": None,
    }


def refund(
    refund_id: str,
    *,
    payment_intent: str,
    charge: str,
    amount: int,
    status: str = "succeeded",
    currency: str = "usd",
) -> dict[str, Any]:
    return {
        "id": refund_id,
        "object": "refund",
        "amount": amount,
        "balance_transaction": f"txn_test_{refund_id[-12:]}",
        "charge": charge,
        "created": int(time.time()),
        "currency": currency,
        "destination_details": {"card": {"type": "refund"}, "type": "card"},
        "metadata": {},
        "payment_intent": payment_intent,
        "reason": "requested_by_customer",
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": status,
        "transfer_reversal": None,
    }


def charge(
    charge_id: str,
    *,
    payment_intent: str,
    amount: int,
    amount_refunded: int,
    refunds: list[dict[str, Any]] | None = None,
    currency: str = "usd",
) -> dict[str, Any]:
    """A charge; `refunds` listed as an expanded list (an endpoint that asks
    for data.object.refunds), else not at all (the default since 2022-11-15)."""
    found: dict[str, Any] = {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "balance_transaction": f"txn_test_{charge_id[-12:]}",
        "billing_details": {"email": "ada@example.com", "name": "Ada Lovelace"},
        "captured": True,
        "created": int(time.time()) - 60,
        "currency": currency,
        "customer": "cus_test_R2d2C3po4Bb8",
        "description": None,
        "disputed": False,
        "livemode": False,
        "metadata": {},
        "outcome": {"network_status": "approved_by_network", "type": "authorized"},
        "paid": True,
        "payment_intent": payment_intent,
        "payment_method": "pm_test_1Nv0ab2eZvKYlo2C",
        "refunded": amount_refunded == amount,
        "status": "succeeded",
    }
    if refunds is not None:
        found["refunds"] = {
            "object": "list",
            "data": refunds,
            "has_more": False,
            "total_count": len(refunds),
            "url": f"/v1/charges/{charge_id}/refunds",
        }
    return found


def dispute(
    dispute_id: str, *, payment_intent: str, charge: str, amount: int, status: str
) -> dict[str, Any]:
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge,
        "created": int(time.time()),
        "currency": "usd",
        "evidence_details": {
            "due_by": int(time.time()) + 7 * 86_400,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": payment_intent,
        "reason": "fraudulent",
        "status": status,
    }


def body(payload: dict[str, Any]) -> str:
    return json.dumps(payload, indent=2)


def signed(
    payload: dict[str, Any] | str, secret: str = SECRET, *, at: int | None = None
) -> tuple[str, str]:
    """The body and its Stripe-Signature header, as Stripe makes them."""
    text = payload if isinstance(payload, str) else body(payload)
    header = stripe.WebhookSignature.generate_signature_header(
        text, secret, timestamp=int(time.time()) if at is None else at
    )
    return text, header


def parsed(payload: dict[str, Any]) -> stripe.Event:
    """The event as the `stripe` package reads it."""
    text, header = signed(payload)
    return stripe.Webhook.construct_event(text, header, SECRET)


@dataclass
class Payment:
    """One purchase's story in Stripe: its session, payment intent and charge,
    and the events Stripe sends about them."""

    user_id: str
    sku: str = "credits_100"
    amount: int = 900
    session_id: str = field(default_factory=lambda: new_id("cs"))
    payment_intent: str = field(default_factory=lambda: new_id("pi"))
    charge_id: str = field(default_factory=lambda: new_id("ch"))

    def session(self, **overrides: Any) -> dict[str, Any]:
        options: dict[str, Any] = {"payment_intent": self.payment_intent, **overrides}
        amount = options.pop("amount", self.amount)
        return checkout_session(self.session_id, self.user_id, self.sku, amount, **options)

    def completed(self, **overrides: Any) -> dict[str, Any]:
        return event("checkout.session.completed", self.session(**overrides))

    def async_succeeded(self) -> dict[str, Any]:
        return event("checkout.session.async_payment_succeeded", self.session())

    def refund(
        self, refund_id: str, amount: int, type_: str = "refund.created", **kw: Any
    ) -> dict[str, Any]:
        obj = refund(
            refund_id,
            payment_intent=self.payment_intent,
            charge=self.charge_id,
            amount=amount,
            **kw,
        )
        return event(type_, obj)

    def charge_refunded(
        self, amount_refunded: int, refunds: list[tuple[str, int]] | None = None
    ) -> dict[str, Any]:
        listed = None
        if refunds is not None:
            listed = [
                refund(rid, payment_intent=self.payment_intent, charge=self.charge_id, amount=a)
                for rid, a in refunds
            ]
        obj = charge(
            self.charge_id,
            payment_intent=self.payment_intent,
            amount=self.amount,
            amount_refunded=amount_refunded,
            refunds=listed,
        )
        return event("charge.refunded", obj)

    def dispute(self, dispute_id: str, type_: str, status: str) -> dict[str, Any]:
        obj = dispute(
            dispute_id,
            payment_intent=self.payment_intent,
            charge=self.charge_id,
            amount=self.amount,
            status=status,
        )
        return event(type_, obj)

    def withdrawn(self, dispute_id: str) -> dict[str, Any]:
        return self.dispute(dispute_id, "charge.dispute.funds_withdrawn", "needs_response")

    def reinstated(self, dispute_id: str) -> dict[str, Any]:
        return self.dispute(dispute_id, "charge.dispute.funds_reinstated", "won")
