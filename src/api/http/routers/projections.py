"""Projections: where they stand, and rebuilds."""

from __future__ import annotations

from typing import Any

import orjson
import psycopg
from fastapi import APIRouter
from starlette.responses import Response

from api.http.deps import IDEMPOTENCY_KEY_DOC, AdminKeyed, ReaderAccess, RoleCheckedRoute
from api.http.routers import problems
from api.http.schemas import ProjectionList, ProjectionOut
from ledger import idempotency
from ledger.application import Ledger
from ledger.db import translate_errors
from ledger.idempotency import IdempotencyKey
from projections import status
from projections.overview import overview

router = APIRouter(prefix="/v1/projections", tags=["projections"], route_class=RoleCheckedRoute)


@router.get(
    "",
    response_model=ProjectionList,
    summary="Projections",
    description="Each projection's version, position, the log's head, the lag between them, "
    "its status (running, rebuilding, stopped, failed), its error, and a rebuild's progress. "
    "Roles: any.",
    responses=problems(401, 403, 503),
)
def list_projections(services: ReaderAccess) -> Response:
    with translate_errors(), services.pool.connection() as conn:
        item = overview(conn, services.projection.name)
    return Response(orjson.dumps({"items": [item.as_dict()]}), media_type="application/json")


@router.post(
    "/users/rebuild",
    status_code=202,
    response_model=ProjectionOut,
    openapi_extra=IDEMPOTENCY_KEY_DOC,
    summary="Rebuild the users table",
    description="Builds a fresh users table from the whole history beside the live one, "
    "verifies it and swaps it in. Commands and reads keep working throughout. Follow it with "
    "GET /v1/projections. With an Idempotency-Key, a retry asks for no second rebuild: it gets "
    "the first answer again. Role: admin.",
    responses=problems(401, 403, 422, 503),
)
def rebuild_users(request: AdminKeyed) -> Response:
    services, key = request.services, request.key
    name = services.projection.name
    with translate_errors(), services.pool.connection() as conn, conn.transaction():
        if key is not None:
            replay = _first_answer(conn, services.ledger, key)
            if replay is not None:
                return replay
        status.request_rebuild(conn, name, unless_requested=False)
        body = overview(conn, name).as_dict()
        if key is not None:
            _remember(conn, key, body)
    return Response(orjson.dumps(body), 202, media_type="application/json")


#: What a rebuild request's key is stored with: no command can have it.
_REBUILD = idempotency.fingerprint("RebuildProjection", {"name": "users"})


def _first_answer(
    conn: psycopg.Connection[Any], ledger: Ledger, key: IdempotencyKey
) -> Response | None:
    """The answer first given under `key`, if any. Keys are looked up and
    stored under the lock the writer takes for each batch of commands (briefly:
    rebuild requests are rare), so that a command under the same key, and a
    retry of this request, come strictly before or after."""
    for statement in ledger.lock_statements:
        conn.execute(statement.encode())
    rows = conn.execute(idempotency.LOOKUP, idempotency.lookup_params([key])).fetchall()
    found = idempotency.stored(rows)
    if key not in found:
        return None
    return Response(
        orjson.dumps(idempotency.first_outcome(found[key], _REBUILD)["rebuild"]),
        202,
        headers={"Idempotent-Replayed": "true"},
        media_type="application/json",
    )


def _remember(conn: psycopg.Connection[Any], key: IdempotencyKey, body: dict[str, Any]) -> None:
    conn.execute(idempotency.STORE, idempotency.store_params([(key, _REBUILD, {"rebuild": body})]))
