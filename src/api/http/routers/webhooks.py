"""Webhook endpoints: where the ledger sends its events, their secrets, and
their deliveries (each with every attempt), retried or recovered by hand.

The secret is shown in the answer that makes it (a create, a rotation), and
again to a retry of that request with the same Idempotency-Key while it still
signs (api.http.webhook_answers: the key's stored answer holds only its hash)."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Path, Query
from starlette.exceptions import HTTPException
from starlette.responses import Response

from api.bootstrap import Services
from api.http import webhook_answers as answers
from api.http.deps import IDEMPOTENCY_KEY_DOC, AdminAccess, AdminKeyed, RoleCheckedRoute
from api.http.params import Limit
from api.http.problems import problem
from api.http.routers import problems
from api.http.schemas.webhooks import (
    DeliveryOut,
    DeliveryPage,
    EndpointOut,
    EndpointPage,
    EndpointPatch,
    EndpointRequest,
    EndpointWithSecret,
    RecoverOut,
    RecoverRequest,
)
from api.integrations.webhooks import signing
from api.integrations.webhooks.safety import Policy, UnsafeUrl
from ledger import events_table
from ledger.db import translate_errors
from ledger.times import timestamp
from projections.webhooks import endpoints_table, messages_table

router = APIRouter(tags=["webhooks"], route_class=RoleCheckedRoute)

EndpointIdPath = Annotated[str, Path(max_length=64, description="An endpoint's id (`ep_...`).")]
DeliveryIdPath = Annotated[str, Path(max_length=64, description="A delivery's id (`msg_...`).")]
After = Annotated[str | None, Query(max_length=64, description="The previous page's `next`.")]
StatusQuery = Annotated[
    Literal["pending", "succeeded", "failed"] | None,
    Query(description="Only deliveries of this status."),
]
Connection = psycopg.Connection[Any]

_ENDPOINT_404 = "No such webhook endpoint (`webhook-endpoint-not-found`)."
_URL_422 = (
    "Invalid body (`validation-error`, `invalid-json`), a URL the ledger will not send to "
    "(`invalid-webhook-url`), or `idempotency-key-reused`."
)


def _unsafe(services: Services, url: str) -> Response | None:
    """The problem with sending to `url`, if there is one."""
    settings = services.settings
    policy = Policy(settings.webhooks_allow_http, settings.webhooks_allow_private)
    try:
        policy.check(url)
    except UnsafeUrl as e:
        return problem(422, "invalid-webhook-url", "Invalid webhook URL", str(e))
    return None


def _found(row: dict[str, Any] | None, what: str = "endpoint") -> dict[str, Any]:
    if row is None:
        raise HTTPException(404, f"no such webhook {what}")
    return row


def _refresh_heads(conn: Connection, endpoint_id: str, user_ids: list[str]) -> None:
    """Messages queued again: which of each user's is to be sent first."""
    conn.execute(messages_table.HEADS_LOCK)
    conn.execute(messages_table.REFRESH_HEADS, ([endpoint_id] * len(user_ids), user_ids))


def _wake_senders(conn: Connection) -> None:
    conn.execute("SELECT pg_notify(%s, '')", (messages_table.CHANNEL,))


# -- endpoints -------------------------------------------------------------------


@router.post(
    "/v1/webhook-endpoints",
    status_code=201,
    response_model=EndpointWithSecret,
    openapi_extra=IDEMPOTENCY_KEY_DOC,
    summary="Create a webhook endpoint",
    description="Every event recorded from now on becomes one message to this endpoint per "
    "subscribed type, signed per Standard Webhooks with the `secret` in this answer (shown "
    "once, and again to a retry with the same Idempotency-Key while that secret signs; "
    "`null` after). Role: admin.",
    responses=problems(401, 403, 413, 422, 503, d422=_URL_422),
)
def create_endpoint(body: EndpointRequest, request: AdminKeyed) -> Response:
    services = request.services
    refused = _unsafe(services, body.url)
    if refused is not None:
        return refused

    def make(conn: Connection) -> tuple[int, dict[str, Any]]:
        secret = signing.new_secret()
        row = answers.one(
            conn,
            endpoints_table.INSERT,
            {
                **body.model_dump(),
                "id": "ep_" + secrets.token_hex(12),
                "secret": secret,
                "created_position": events_table.head(conn),
            },
        )
        return 201, {**endpoints_table.view(_found(row)), "secret": secret}

    return answers.keyed(services, request.key, "CreateWebhookEndpoint", body.model_dump(), make)


@router.get(
    "/v1/webhook-endpoints",
    response_model=EndpointPage,
    summary="Webhook endpoints",
    description="Every endpoint, oldest first (never a secret). Role: admin.",
    responses=problems(401, 403, 422, 503),
)
def list_endpoints(services: AdminAccess, limit: Limit = 100, after: After = None) -> Response:
    with translate_errors(), services.pool.connection() as conn:
        after_seq = 0
        if after is not None:
            found = answers.one(conn, endpoints_table.SEQ_OF, (after,))
            if found is None:
                raise HTTPException(422, f"after: {after!r} is not a webhook endpoint")
            after_seq = int(found["seq"])
        rows = answers.every(conn, endpoints_table.PAGE, (after_seq, limit + 1))
    items = [endpoints_table.view(row) for row in rows[:limit]]
    return answers.json({"items": items, "next": items[-1]["id"] if len(rows) > limit else None})


@router.get(
    "/v1/webhook-endpoints/{endpoint_id}",
    response_model=EndpointOut,
    summary="A webhook endpoint",
    description="Role: admin.",
    responses=problems(401, 403, 404, 422, 503, d404=_ENDPOINT_404),
)
def get_endpoint(endpoint_id: EndpointIdPath, services: AdminAccess) -> Response:
    with translate_errors(), services.pool.connection() as conn:
        row = _found(answers.one(conn, endpoints_table.ONE, (endpoint_id,)))
    return answers.json(endpoints_table.view(row))


@router.patch(
    "/v1/webhook-endpoints/{endpoint_id}",
    response_model=EndpointOut,
    summary="Change a webhook endpoint",
    description="Set any of `url`, `event_types`, `disabled`, `low_balance_threshold`, "
    "`description` (null clears the last two). Nothing is sent to a disabled endpoint, but "
    "its messages are queued all the same: enabling it sends everything that waits for it "
    "at once, in order per user. Role: admin.",
    responses=problems(401, 403, 404, 413, 422, 503, d404=_ENDPOINT_404, d422=_URL_422),
)
def patch_endpoint(
    endpoint_id: EndpointIdPath, body: EndpointPatch, services: AdminAccess
) -> Response:
    fields = [name for name in endpoints_table.PATCHABLE if name in body.model_fields_set]
    values = body.model_dump()
    for name in ("url", "event_types", "disabled"):
        if name in fields and values[name] is None:
            raise HTTPException(422, f"{name} cannot be null")
    if "url" in fields:
        refused = _unsafe(services, values["url"])
        if refused is not None:
            return refused
    with translate_errors(), services.pool.connection() as conn, conn.transaction():
        if not fields:
            row = answers.one(conn, endpoints_table.ONE, (endpoint_id,))
        else:
            was = answers.one(conn, endpoints_table.ONE + " FOR UPDATE", (endpoint_id,))
            row = answers.one(conn, endpoints_table.patch(fields), {**values, "id": endpoint_id})
            if was is not None and was["disabled"] and row is not None and not row["disabled"]:
                resumed = {"endpoint": endpoint_id, "now": services.clock()}
                conn.execute(messages_table.RESUME, resumed)  # what waited goes at once
            _wake_senders(conn)
    return answers.json(endpoints_table.view(_found(row)))


@router.delete(
    "/v1/webhook-endpoints/{endpoint_id}",
    response_model=EndpointOut,
    summary="Delete a webhook endpoint",
    description="It hears of nothing more; its deliveries are forgotten. Answers the endpoint "
    "as it was. Role: admin.",
    responses=problems(401, 403, 404, 422, 503, d404=_ENDPOINT_404),
)
def delete_endpoint(endpoint_id: EndpointIdPath, services: AdminAccess) -> Response:
    with translate_errors(), services.pool.connection() as conn, conn.transaction():
        row = _found(answers.one(conn, endpoints_table.ONE + " FOR UPDATE", (endpoint_id,)))
        conn.execute(endpoints_table.DELETE, (endpoint_id,))
    return answers.json(endpoints_table.view(row))


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/rotate-secret",
    response_model=EndpointWithSecret,
    openapi_extra=IDEMPOTENCY_KEY_DOC,
    summary="Rotate an endpoint's secret",
    description="A new secret, in this answer only (and again to a retry with the same "
    "Idempotency-Key while that secret signs; `null` after). For 24 hours the previous one "
    "signs too: each message then carries two signatures in `webhook-signature`. Role: admin.",
    responses=problems(401, 403, 404, 422, 503, d404=_ENDPOINT_404),
)
def rotate_secret(endpoint_id: EndpointIdPath, request: AdminKeyed) -> Response:
    services = request.services

    def make(conn: Connection) -> tuple[int, dict[str, Any]]:
        secret = signing.new_secret()
        until = services.clock() + timedelta(seconds=signing.ROTATION_OVERLAP_SECONDS)
        row = answers.one(
            conn, endpoints_table.ROTATE, {"id": endpoint_id, "secret": secret, "until": until}
        )
        return 200, {**endpoints_table.view(_found(row)), "secret": secret}

    return answers.keyed(services, request.key, "RotateWebhookSecret", {"id": endpoint_id}, make)


# -- deliveries ------------------------------------------------------------------


def _deliveries(conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    attempts: dict[str, list[dict[str, Any]]] = {row["id"]: [] for row in rows}
    for a in answers.every(conn, messages_table.ATTEMPTS_OF, (list(attempts),)):
        attempts[a["message_id"]].append(a)
    return [messages_table.view(row, attempts[row["id"]]) for row in rows]


@router.get(
    "/v1/webhook-endpoints/{endpoint_id}/deliveries",
    response_model=DeliveryPage,
    summary="An endpoint's deliveries",
    description="Its messages, oldest first, each with every attempt (time, HTTP status, "
    "error, duration). Role: admin.",
    responses=problems(401, 403, 404, 422, 503, d404=_ENDPOINT_404),
)
def list_deliveries(
    endpoint_id: EndpointIdPath,
    services: AdminAccess,
    status: StatusQuery = None,
    limit: Limit = 100,
    after: After = None,
) -> Response:
    with translate_errors(), services.pool.connection() as conn:
        _found(answers.one(conn, endpoints_table.ONE, (endpoint_id,)))
        after_seq = 0
        if after is not None:
            found = answers.one(conn, messages_table.SEQ_OF, (after, endpoint_id))
            if found is None:
                raise HTTPException(422, f"after: {after!r} is not a delivery of this endpoint")
            after_seq = int(found["seq"])
        query = messages_table.of_endpoint(status)
        params = {"endpoint": endpoint_id, "after": after_seq, "status": status, "limit": limit + 1}
        rows = answers.every(conn, query, params)
        items = _deliveries(conn, rows[:limit])
    return answers.json({"items": items, "next": items[-1]["id"] if len(rows) > limit else None})


@router.post(
    "/v1/webhook-deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=DeliveryOut,
    openapi_extra=IDEMPOTENCY_KEY_DOC,
    summary="Send a delivery again",
    description="Queued again at once, with its `webhook-id`, and the whole retry schedule "
    "before it. No body. Role: admin.",
    responses=problems(401, 403, 404, 422, 503, d404="No such delivery (`not-found`)."),
)
def retry_delivery(delivery_id: DeliveryIdPath, request: AdminKeyed) -> Response:
    services = request.services

    def make(conn: Connection) -> tuple[int, dict[str, Any]]:
        now = services.clock()
        row = _found(
            answers.one(conn, messages_table.REQUEUE, {"id": delivery_id, "now": now}), "delivery"
        )
        _refresh_heads(conn, row["endpoint_id"], [row["user_id"]])
        _wake_senders(conn)
        return 202, _deliveries(conn, [row])[0]

    return answers.keyed(services, request.key, "RetryWebhookDelivery", {"id": delivery_id}, make)


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/recover",
    status_code=202,
    response_model=RecoverOut,
    openapi_extra=IDEMPOTENCY_KEY_DOC,
    summary="Send everything since a time again",
    description="Every message of this endpoint about an event recorded at or after `since` "
    "is queued again (those still pending are left as they are). Role: admin.",
    responses=problems(401, 403, 404, 413, 422, 503, d404=_ENDPOINT_404),
)
def recover(endpoint_id: EndpointIdPath, body: RecoverRequest, request: AdminKeyed) -> Response:
    services = request.services

    def make(conn: Connection) -> tuple[int, dict[str, Any]]:
        _found(answers.one(conn, endpoints_table.ONE, (endpoint_id,)))
        params = {"endpoint": endpoint_id, "since": body.since, "now": services.clock()}
        users = [str(u) for (u,) in conn.execute(messages_table.RECOVER, params).fetchall()]
        _refresh_heads(conn, endpoint_id, sorted(set(users)))
        _wake_senders(conn)
        queued = len(users)
        return 202, {"endpoint_id": endpoint_id, "since": timestamp(body.since), "queued": queued}

    fields = {"id": endpoint_id, "since": timestamp(body.since)}
    return answers.keyed(services, request.key, "RecoverWebhookMessages", fields, make)
