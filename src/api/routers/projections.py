"""Projections: where they stand, and rebuilds."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from starlette.responses import Response

from api.deps import AdminAccess, ReaderAccess
from api.routers import problems
from api.schemas import ProjectionList, ProjectionOut
from ledger.application import translate_errors
from projections import status
from projections.overview import overview

router = APIRouter(prefix="/v1/projections", tags=["projections"])


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
    summary="Rebuild the users table",
    description="Builds a fresh users table from the whole history beside the live one, "
    "verifies it and swaps it in. Commands and reads keep working throughout. Follow it with "
    "GET /v1/projections. Role: admin.",
    responses=problems(401, 403, 503),
)
def rebuild_users(services: AdminAccess) -> Response:
    with translate_errors(), services.pool.connection() as conn:
        status.request_rebuild(conn, services.projection.name, unless_requested=False)
        item = overview(conn, services.projection.name)
    return Response(orjson.dumps(item.as_dict()), 202, media_type="application/json")
