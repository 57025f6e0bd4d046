"""Liveness, readiness and metrics: for orchestrators and scrapers, no key needed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import psycopg
from fastapi import APIRouter
from starlette.responses import Response

from api.http.deps import OpenServices
from api.http.metrics import CONTENT_TYPE, WebhookFigures
from api.http.problems import RETRY_AFTER_SECONDS, problem
from projections.overview import overview
from projections.webhooks import messages_table, retention

router = APIRouter(tags=["health"])


_OK = orjson.dumps({"status": "ok"})


@router.get(
    "/healthz",
    summary="Liveness",
    description="The process is up.",
    responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
)
async def healthz() -> Response:
    return Response(_OK, media_type="application/json")


@router.get(
    "/readyz",
    summary="Readiness",
    description="503 while PostgreSQL cannot be reached or the projection has failed.",
)
def readyz(services: OpenServices) -> Response:
    try:
        with services.pool.connection() as conn:
            item = overview(conn, services.projection.name)
    except psycopg.Error as e:
        return problem(
            503,
            "database-unavailable",
            "Not ready",
            f"PostgreSQL: {e}",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    if item.status == "failed":
        return problem(
            503,
            "projection-failed",
            "Not ready",
            f"the {item.name} projection has failed",
            error=item.error,
        )
    body = {"status": "ready", "projection": item.status, "lag": item.lag}
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(services: OpenServices) -> Response:
    webhooks = None
    try:
        with services.pool.connection() as conn:
            items = [overview(conn, services.projection.name)]
            webhooks = webhook_figures(conn, services.clock())
    except psycopg.Error:
        items = []
    return Response(services.metrics.render(items, webhooks), media_type=CONTENT_TYPE)


def webhook_figures(conn: psycopg.Connection[Any], now: datetime) -> WebhookFigures:
    by_status = {str(s): int(n) for s, n in conn.execute(retention.COUNTS).fetchall()}
    endpoints = [
        (str(i), int(n), max((now - oldest).total_seconds(), 0.0) if oldest else 0.0)
        for i, _, oldest, n in conn.execute(messages_table.LAG).fetchall()
    ]
    return WebhookFigures(by_status, endpoints)
