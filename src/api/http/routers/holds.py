"""Holds: reserve before an AI reply, settle what it cost, release or let expire."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query
from starlette.exceptions import HTTPException
from starlette.responses import Response

from api.http.deps import (
    IDEMPOTENCY_KEY_DOC,
    ReaderAccess,
    RoleCheckedRoute,
    ServiceCommand,
    ServiceCommandMaybeBody,
)
from api.http.params import After, Limit, UserIdPath
from api.http.routers import problems
from api.http.schemas import (
    HoldCommandOut,
    HoldOut,
    HoldPage,
    HoldRequest,
    ReleaseRequest,
    SettleRequest,
)
from ledger import events_table, holds_table
from ledger.commands import PlaceHold, ReleaseHold, SettleHold
from ledger.domain import Balance
from ledger.domain.holds import hold_id as new_hold_id
from ledger.errors import HoldNotFound, UserNotFound
from projections.views import hold_view

router = APIRouter(prefix="/v1/users", tags=["holds"], route_class=RoleCheckedRoute)

HoldIdPath = Annotated[str, Path(max_length=64, description="A hold's id (`hold_...`).")]
HoldStatusQuery = Annotated[
    Literal["open", "settled", "released", "expired"] | None,
    Query(description="Only holds of this status (as of now: open past expiry is expired)."),
]

_HOLD_PROBLEMS = problems(
    401,
    403,
    404,
    409,
    413,
    422,
    503,
    d404="`user-not-found`, or `hold-not-found` (no such hold of this user).",
    d409="`hold-closed` (the detail says how), `hold-expired`, `settle-exceeds-hold`, "
    "`insufficient-balance`, or `idempotency-key-in-use`.",
)


def _place(balance: Balance) -> Any:
    async def place_hold(
        user_id: UserIdPath, body: HoldRequest, context: ServiceCommand
    ) -> Response:
        hold_id = new_hold_id(user_id, context.scope)
        command = PlaceHold(user_id, balance, body.amount, hold_id, body.reason, body.ttl_seconds)
        return await context.run(command, 201)

    place_hold.__name__ = f"place_{balance.segment.replace('-', '_')}_hold"
    return place_hold


for _balance in Balance:
    router.post(
        f"/{{user_id}}/{_balance.segment}/holds",
        status_code=201,
        response_model=HoldCommandOut,
        openapi_extra=IDEMPOTENCY_KEY_DOC,
        summary=f"Hold {_balance.noun}",
        description=f"Moves `amount` of {_balance.value} from available to held, out of its "
        "grants in their consumption order, until it is settled, released, or expires "
        "(`ttl_seconds`, default 900; from `expires_at` on it counts as released for every "
        "decision). More than available: `insufficient-balance`, with the facts. With an "
        "Idempotency-Key the hold's id is derived from the key, so a retried placement lands "
        "on the same hold. Roles: admin, service.",
        responses=_HOLD_PROBLEMS,
    )(_place(_balance))


@router.post(
    "/{user_id}/holds/{hold_id}/settle",
    response_model=HoldCommandOut,
    openapi_extra=IDEMPOTENCY_KEY_DOC,
    summary="Settle a hold",
    description="Spends `amount` (0 up to the held amount) and gives the rest back to the "
    "grants it came from (what comes back to a grant past its expiry expires at once). A hold "
    "resolves once: a closed one is `hold-closed`, an expired one `hold-expired`; more than "
    "it holds is `settle-exceeds-hold` (spend the difference with a spend). Roles: admin, "
    "service.",
    responses=_HOLD_PROBLEMS,
)
async def settle_hold(
    user_id: UserIdPath, hold_id: HoldIdPath, body: SettleRequest, context: ServiceCommand
) -> Response:
    return await context.run(SettleHold(user_id, hold_id, body.amount, body.reason), 200)


@router.post(
    "/{user_id}/holds/{hold_id}/release",
    response_model=HoldCommandOut,
    openapi_extra=IDEMPOTENCY_KEY_DOC,
    summary="Release a hold",
    description="Gives the whole hold back (a reply that failed). The body is `{}` or none. "
    "Roles: admin, service.",
    responses=_HOLD_PROBLEMS,
)
async def release_hold(
    user_id: UserIdPath,
    hold_id: HoldIdPath,
    context: ServiceCommandMaybeBody,
    body: ReleaseRequest | None = None,
) -> Response:
    return await context.run(ReleaseHold(user_id, hold_id), 200)


# -- reads ------------------------------------------------------------------------


@router.get(
    "/{user_id}/holds",
    response_model=HoldPage,
    summary="A user's holds",
    description="Oldest first, from the record written with each hold's events (never "
    "behind them). Roles: any.",
    responses=problems(401, 403, 404, 422, 503),
)
async def list_holds(
    user_id: UserIdPath,
    services: ReaderAccess,
    status: HoldStatusQuery = None,
    limit: Limit = 100,
    after: After = None,
) -> Response:
    reads = services.reads
    if not await reads.fetch_one(events_table.HAS_EVENTS, (user_id,)):
        raise UserNotFound(f"no user with id {user_id!r}")
    after_position = 0
    if after is not None:
        found = await reads.fetch_one(holds_table.POSITION_OF, (user_id, after))
        if found is None:
            raise HTTPException(422, f"after: {after!r} is not a hold of this user")
        after_position = int(found["position"])
    now = services.clock()
    rows = await reads.fetch_all(
        holds_table.of_user(status),
        {"user_id": user_id, "after": after_position, "now": now, "limit": limit + 1},
    )
    items = [_shown(row, now) for row in rows[:limit]]
    body = {"items": items, "next": items[-1]["id"] if len(rows) > limit else None}
    return Response(orjson.dumps(body), media_type="application/json")


@router.get(
    "/{user_id}/holds/{hold_id}",
    response_model=HoldOut,
    summary="A hold",
    description="`hold-not-found` for a hold of another user. Roles: any.",
    responses=problems(401, 403, 404, 422, 503, d404="`hold-not-found`."),
)
async def get_hold(user_id: UserIdPath, hold_id: HoldIdPath, services: ReaderAccess) -> Response:
    row = await services.reads.fetch_one(holds_table.ONE, (user_id, hold_id))
    if row is None:
        raise HoldNotFound(f"user {user_id!r} has no hold {hold_id}")
    return Response(orjson.dumps(_shown(row, services.clock())), media_type="application/json")


def _shown(row: dict[str, Any], now: Any) -> dict[str, Any]:
    user_id, hold, _ = holds_table.hold_of(list(row.values()))
    return hold_view(user_id, holds_table.status_at(hold, now))
