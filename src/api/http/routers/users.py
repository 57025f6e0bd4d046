"""Users: the commands on a user's stream, and the reads of a user."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import psycopg
from fastapi import APIRouter, Query, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response

from api.http.deps import (
    IDEMPOTENCY_KEY_DOC,
    AdminCommand,
    ReaderAccess,
    RoleCheckedRoute,
    ServiceCommand,
)
from api.http.params import MAX_POSITION, Limit, MinPosition, UserIdPath
from api.http.routers import problems
from api.http.schemas import (
    AmountRequest,
    CommandOut,
    GrantRequest,
    HistoryPage,
    PlanRequest,
    RegisterRequest,
    UserOut,
)
from api.http.schemas.common import Time
from api.http.waiting import wait_for_projection
from ledger.commands import (
    ChangePlan,
    GrantChatMessages,
    GrantCredits,
    RegisterUser,
    SpendChatMessages,
    SpendCredits,
)
from ledger.db import translate_errors
from ledger.errors import UserNotFound
from projections import history
from projections.users_table import SELECT_USER, SELECT_USER_BEFORE
from projections.views import event_view, row_view, timestamp, user_view

router = APIRouter(prefix="/v1/users", tags=["users"], route_class=RoleCheckedRoute)

_COMMAND_PROBLEMS = (401, 403, 404, 409, 413, 422, 503)


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


# -- commands -----------------------------------------------------------------


@router.post(
    "",
    status_code=201,
    response_model=CommandOut,
    openapi_extra=IDEMPOTENCY_KEY_DOC,
    summary="Register a user",
    description="A new user: level free, no renewal, 10 free credits, 20 free chat messages. "
    "Roles: admin, service.",
    responses=problems(
        401, 403, 409, 413, 422, 503, d409="`user-exists`, or `idempotency-key-in-use`."
    ),
)
async def register_user(body: RegisterRequest, context: ServiceCommand) -> Response:
    return await context.run(RegisterUser(body.id), 201)


@router.post(
    "/{user_id}/credits/grants",
    status_code=201,
    response_model=CommandOut,
    openapi_extra=IDEMPOTENCY_KEY_DOC,
    summary="Grant credits",
    description="A grant (a lot) of free_credits, with an optional `expires_at` and a "
    "`priority` (0-100, lower is consumed first); the event carries its `grant_id`. Refused "
    "with `balance-limit` past 2,147,483,647 (available and held). Role: admin.",
    responses=problems(*_COMMAND_PROBLEMS),
)
async def grant_credits(user_id: UserIdPath, body: GrantRequest, context: AdminCommand) -> Response:
    return await context.run(_grant(GrantCredits, user_id, body), 201)


@router.post(
    "/{user_id}/credits/spends",
    status_code=201,
    response_model=CommandOut,
    openapi_extra=IDEMPOTENCY_KEY_DOC,
    summary="Spend credits",
    description="Takes from what is available, from grants in their consumption order "
    "(priority, then soonest expiry, then oldest); the event says which. Refused with "
    "`insufficient-balance` (with the facts behind it) rather than go below 0. Roles: "
    "admin, service.",
    responses=problems(*_COMMAND_PROBLEMS),
)
async def spend_credits(
    user_id: UserIdPath, body: AmountRequest, context: ServiceCommand
) -> Response:
    return await context.run(SpendCredits(user_id, body.amount, body.reason), 201)


@router.post(
    "/{user_id}/chat-messages/grants",
    status_code=201,
    response_model=CommandOut,
    openapi_extra=IDEMPOTENCY_KEY_DOC,
    summary="Grant chat messages",
    description="As for credits, on free_chat_messages. Role: admin.",
    responses=problems(*_COMMAND_PROBLEMS),
)
async def grant_chat_messages(
    user_id: UserIdPath, body: GrantRequest, context: AdminCommand
) -> Response:
    return await context.run(_grant(GrantChatMessages, user_id, body), 201)


def _grant(
    command: type[GrantCredits | GrantChatMessages], user_id: str, body: GrantRequest
) -> GrantCredits | GrantChatMessages:
    return command(user_id, body.amount, body.reason, body.priority, body.expires_at)


@router.post(
    "/{user_id}/chat-messages/spends",
    status_code=201,
    response_model=CommandOut,
    openapi_extra=IDEMPOTENCY_KEY_DOC,
    summary="Spend chat messages",
    description="As for credits, on free_chat_messages. Roles: admin, service.",
    responses=problems(*_COMMAND_PROBLEMS),
)
async def spend_chat_messages(
    user_id: UserIdPath, body: AmountRequest, context: ServiceCommand
) -> Response:
    return await context.run(SpendChatMessages(user_id, body.amount, body.reason), 201)


@router.put(
    "/{user_id}/plan",
    status_code=200,
    response_model=CommandOut,
    openapi_extra=IDEMPOTENCY_KEY_DOC,
    summary="Change the plan",
    description="Level `free` (no renewal period) or `paid` (renewal `lifetime`). Legacy "
    "levels and periods are refused. Role: admin.",
    responses=problems(401, 403, 404, 409, 413, 422, 503, d409="`idempotency-key-in-use`."),
)
async def change_plan(user_id: UserIdPath, body: PlanRequest, context: AdminCommand) -> Response:
    return await context.run(ChangePlan(user_id, body.level, body.renewal_period), 200)


# -- reads --------------------------------------------------------------------


@router.get(
    "/{user_id}",
    response_model=UserOut,
    summary="Get a user",
    description="From the projected users table. With `min_position`, waits (up to 5 s) until "
    "the projection has applied that position: pass a command's `event.position` to read "
    "your own write. Roles: any.",
    responses=problems(401, 403, 404, 422, 503, 504),
)
async def get_user(
    user_id: UserIdPath,
    services: ReaderAccess,
    request: Request,
    min_position: MinPosition = None,
) -> Response:
    await wait_for_projection(services, min_position)
    try:
        row = await services.reads.fetch_one(SELECT_USER, (user_id,))
    except psycopg.errors.UndefinedColumn:  # the previous release's table, until rebuilt
        row = await services.reads.fetch_one(SELECT_USER_BEFORE, (user_id,))
    if row is None:
        raise UserNotFound(f"no user with id {user_id!r}")
    return _json(row_view(row))


@router.get(
    "/{user_id}/events",
    response_model=HistoryPage,
    summary="A user's history",
    description="The user's events, oldest first, each with the user's state right after it. "
    "Roles: any.",
    responses=problems(401, 403, 404, 422, 503),
)
def user_events(
    user_id: UserIdPath,
    services: ReaderAccess,
    after_version: Annotated[
        int, Query(ge=0, le=MAX_POSITION, description="Events after this version.")
    ] = 0,
    limit: Limit = 100,
) -> Response:
    items: list[dict[str, Any]] = []
    with translate_errors():
        steps, more = history.timeline(
            services.log, user_id, after_version=after_version, limit=limit
        )
        if not steps and not services.log.has_events(user_id):
            raise UserNotFound(f"no user with id {user_id!r}")
    for step in steps:
        item = event_view(step.recorded.event, step.recorded.position)
        item["user"] = user_view(step.state, step.recorded.position)
        items.append(item)
    return _json({"items": items, "next": items[-1]["version"] if more else None})


@router.get(
    "/{user_id}/state",
    response_model=UserOut,
    summary="A user's state in the past",
    description="Replayed from history: the state after every event recorded at or before "
    "`at` (an RFC 3339 time with a timezone; an event's own `recorded_at` includes it), or "
    "after the first `version` events. Without either, the latest. Roles: any.",
    responses=problems(401, 403, 404, 422, 503),
)
def user_state(
    user_id: UserIdPath,
    services: ReaderAccess,
    at: Annotated[
        Time | None,
        Query(description="RFC 3339, with an offset: 2026-01-31T12:00:00Z."),
    ] = None,
    version: Annotated[
        int | None, Query(ge=1, le=MAX_POSITION, description="A version of the stream.")
    ] = None,
) -> Response:
    if at is not None and version is not None:
        raise HTTPException(422, "give at or version, not both")
    with translate_errors():
        found = history.state_at(services.log, user_id, at=at, version=version)
    if found is None:
        when = f" at {timestamp(at)}" if at is not None else ""
        raise UserNotFound(f"no user with id {user_id!r}{when}")
    return _json(user_view(found.state, found.position))
