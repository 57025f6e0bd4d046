"""Stripe: the webhook its deliveries arrive at, and what arrived.

The webhook needs no API key (api.http.middleware): Stripe signs each
delivery instead, and nothing is read of a delivery before its signature is
checked (api.integrations.stripe). A delivery is answered 2xx only once what
it caused is committed, with the record of it, in one transaction; while
PostgreSQL is away it gets 503, and Stripe sends it again later."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response

from api.http.deps import AdminAccess, OpenServices, RoleCheckedRoute
from api.http.middleware import REQUEST_ID_KEY, STRIPE_WEBHOOK_PATH
from api.http.params import Limit
from api.http.problems import problem
from api.http.routers import problems
from api.http.schemas import StripeDeliveryOut, StripeEventPage
from api.integrations.stripe import HANDLED, InvalidPayload, InvalidSignature
from ledger import stripe_table
from ledger.commands import ApplyStripeEvent
from ledger.errors import AlreadyReceived, LedgerError, NotApplied

router = APIRouter(tags=["stripe"], route_class=RoleCheckedRoute)

_WEBHOOK_DOC: dict[str, Any] = {
    "parameters": [
        {
            "name": "Stripe-Signature",
            "in": "header",
            "required": True,
            "schema": {"type": "string", "maxLength": 8192},
            "description": "Stripe's signature of the raw body, with its timestamp.",
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "description": "A Stripe event, as Stripe sends it."}
            }
        },
    },
}


@router.post(
    STRIPE_WEBHOOK_PATH,
    response_model=StripeDeliveryOut,
    openapi_extra=_WEBHOOK_DOC,
    summary="Receive a Stripe event",
    description="Where a Stripe webhook endpoint sends its events. No API key: the "
    "`Stripe-Signature` must verify against one of LEDGER_STRIPE_WEBHOOK_SECRETS, within 300 s. "
    "Purchases (`checkout.session.completed` paid, `checkout.session.async_payment_succeeded`) "
    "grant the SKU's credits and plan; refunds (`refund.created`, `refund.updated`, "
    "`charge.refunded`) and disputes (`charge.dispute.funds_withdrawn`, "
    "`charge.dispute.funds_reinstated`) take back, or give back, their share. Each event id, "
    "purchase, refund and dispute is applied once. 200 with what became of it, only once "
    "it is committed (the same event again: its first outcome, with `Idempotent-Replayed: "
    "true`).",
    responses=problems(
        400,
        404,
        413,
        503,
        d400="`invalid-signature` (missing, wrong, expired or from the future), or "
        "`invalid-payload` (signed, but not a Stripe event the ledger can read). Nothing is "
        "recorded.",
        d404="Stripe webhooks are not configured (`not-found`).",
    ),
)
async def stripe_webhook(request: Request, services: OpenServices) -> Response:
    webhook = services.stripe
    if webhook is None:
        raise HTTPException(
            404, "Stripe webhooks are not configured (LEDGER_STRIPE_WEBHOOK_SECRETS)"
        )
    metrics = services.metrics
    try:
        command = webhook.command(
            await request.body(), request.headers.get("stripe-signature"), services.clock()
        )
    except InvalidSignature as e:
        metrics.delivered("unverified", "invalid-signature")
        return problem(400, "invalid-signature", "Invalid signature", str(e))
    except InvalidPayload as e:
        metrics.delivered("unverified", "invalid-payload")
        return problem(400, "invalid-payload", "Invalid payload", str(e))
    kind = command.delivery.type if command.delivery.type in HANDLED else "other"
    cause = command.delivery.cause(str(request.scope.get(REQUEST_ID_KEY, "")) or None)
    headers = None
    try:
        accepted = await services.writer.submit(command, cause)
    except NotApplied as e:
        body = _answer(command, e.outcome, e.detail, command.user_id or None)
    except AlreadyReceived as e:
        assert e.facts is not None
        body = {name: e.facts[name] for name in StripeDeliveryOut.model_fields}
        headers = {"Idempotent-Replayed": "true"}
        metrics.delivered(kind, "duplicate")
    except LedgerError as e:
        metrics.delivered(kind, e.code)
        raise
    else:
        body = _answer(command, "applied", None, str(accepted.user["id"]))
    if headers is None:
        metrics.delivered(kind, str(body["status"]))
    return Response(orjson.dumps(body), headers=headers, media_type="application/json")


def _answer(
    command: ApplyStripeEvent, status: str, error: str | None, user_id: str | None
) -> dict[str, Any]:
    delivery = command.delivery
    return {
        "id": delivery.event_id,
        "type": delivery.type,
        "object_id": delivery.object_id,
        "status": status,
        "error": error,
        "user_id": user_id,
    }


StatusQuery = Annotated[
    Literal["applied", "ignored", "rejected", "waiting"] | None,
    Query(description="Only events of this outcome."),
]


@router.get(
    "/v1/stripe/events",
    response_model=StripeEventPage,
    summary="Stripe events received",
    description="Every Stripe event the webhook recorded, in the order received, with what "
    "became of it. Role: admin.",
    responses=problems(401, 403, 422, 503),
)
async def stripe_events(
    services: AdminAccess,
    status: StatusQuery = None,
    limit: Limit = 100,
    after: Annotated[
        str | None, Query(max_length=255, description="The previous page's `next`.")
    ] = None,
) -> Response:
    reads = services.reads
    after_seq = 0
    if after is not None:
        found = await reads.fetch_one(stripe_table.SEQ_OF, (after,))
        if found is None:
            raise HTTPException(422, f"after: {after!r} is not a Stripe event received")
        after_seq = int(found["seq"])
    rows = await reads.fetch_all(
        stripe_table.of_status(status), {"after": after_seq, "status": status, "limit": limit + 1}
    )
    items = [stripe_table.view(list(row.values())) for row in rows[:limit]]
    body = {"items": items, "next": items[-1]["id"] if len(rows) > limit else None}
    return Response(orjson.dumps(body), media_type="application/json")
