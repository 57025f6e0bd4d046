"""The global event log, and audits of the projection against it."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query
from starlette.responses import Response

from api.http.deps import AdminAccess, ReaderAccess, RoleCheckedRoute
from api.http.params import MAX_POSITION, Limit, UserIdPath
from api.http.routers import problems
from api.http.schemas import AuditOut, EventPage
from ledger.db import translate_errors
from ledger.errors import UserNotFound
from projections.audit import audit_user
from projections.views import event_view

router = APIRouter(tags=["history"], route_class=RoleCheckedRoute)


@router.get(
    "/v1/events",
    response_model=EventPage,
    summary="Every user's events",
    description="All events in global order (by position). Role: admin.",
    responses=problems(401, 403, 422, 503),
)
def all_events(
    services: AdminAccess,
    after: Annotated[
        int, Query(ge=0, le=MAX_POSITION, description="Events after this position.")
    ] = 0,
    limit: Limit = 100,
) -> Response:
    with translate_errors():
        page, more = services.log.events_after(after, limit)
    body = {
        "items": [event_view(r.event, r.position) for r in page],
        "next": page[-1].position if more else None,
    }
    return Response(orjson.dumps(body), media_type="application/json")


@router.get(
    "/v1/audit/users/{user_id}",
    response_model=AuditOut,
    summary="Audit a user",
    description="The projected row against a replay of the user's history, both read in one "
    "snapshot at the projection's position. Roles: any.",
    responses=problems(401, 403, 404, 422, 503),
)
def audit(user_id: UserIdPath, services: ReaderAccess) -> Response:
    with translate_errors(), services.replica_pool.connection() as conn:
        result = audit_user(conn, services.ledger, user_id, services.projection)
    if result is None:
        raise UserNotFound(f"no user with id {user_id!r}")
    return Response(orjson.dumps(result.as_dict()), media_type="application/json")
