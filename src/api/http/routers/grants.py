"""A user's grants (lots), and allowances that reset a balance every period."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query
from starlette.exceptions import HTTPException
from starlette.responses import Response

from api.http.deps import (
    IDEMPOTENCY_KEY_DOC,
    AdminCommand,
    AdminCommandMaybeBody,
    ReaderAccess,
    RoleCheckedRoute,
)
from api.http.params import After, BalancePath, Limit, MinPosition, UserIdPath
from api.http.routers import problems
from api.http.schemas import AllowanceList, AllowanceRequest, CommandOut, GrantPage
from api.http.waiting import wait_for_projection
from ledger import codec
from ledger.commands import RemoveAllowance, SetAllowance
from ledger.domain import Allowance, Balance
from ledger.errors import UserNotFound
from ledger.times import timestamp
from projections import users_table

router = APIRouter(prefix="/v1/users", tags=["grants"], route_class=RoleCheckedRoute)

GrantStatusQuery = Annotated[
    Literal["active", "expired", "used"] | None,
    Query(description="Only grants of this status (as of now: active past expiry is expired)."),
]


@router.get(
    "/{user_id}/grants",
    response_model=GrantPage,
    summary="A user's grants",
    description="Every addition to a balance (registration defaults, imports, grants, "
    "allowance periods, purchases), oldest first, with what remains, is held, was spent or "
    "expired. From the projection: pass a command's `event.position` as `min_position` to "
    "read your own write. Roles: any.",
    responses=problems(401, 403, 404, 422, 503, 504),
)
async def list_grants(
    user_id: UserIdPath,
    services: ReaderAccess,
    status: GrantStatusQuery = None,
    limit: Limit = 100,
    after: After = None,
    min_position: MinPosition = None,
) -> Response:
    reads = services.reads
    await wait_for_projection(services, min_position)
    if not await reads.fetch_one(users_table.SELECT_STATE, (user_id,)):
        raise UserNotFound(f"no user with id {user_id!r}")
    after_position, after_id = 0, ""
    if after is not None:
        found = await reads.fetch_one(users_table.SELECT_GRANT_POSITION, (user_id, after))
        if found is None:
            raise HTTPException(422, f"after: {after!r} is not a grant of this user")
        after_position, after_id = int(found["position"]), after
    now = services.clock()
    rows = await reads.fetch_all(
        users_table.select_grants(status),
        {
            "user_id": user_id,
            "after_position": after_position,
            "after_id": after_id,
            "now": now,
            "limit": limit + 1,
        },
    )
    items = [_grant_view(row, now) for row in rows[:limit]]
    body = {"items": items, "next": items[-1]["id"] if len(rows) > limit else None}
    return Response(orjson.dumps(body), media_type="application/json")


def _grant_view(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A Grant as of `now`: active past its expiry shows as expired."""
    remaining, expired, status = row["remaining"], row["expired"], row["status"]
    if status == "active" and row["expires_at"] is not None and row["expires_at"] <= now:
        expired, remaining = expired + remaining, 0
        status = "expired" if not row["held"] else "active"
    return {
        "id": row["id"],
        "balance": row["balance"],
        "amount": row["amount"],
        "remaining": remaining,
        "held": row["held"],
        "spent": row["spent"],
        "expired": expired,
        "clawed_back": row["clawed_back"],
        "priority": row["priority"],
        "expires_at": _time(row["expires_at"]),
        "granted_at": _time(row["granted_at"]),
        "reason": row["reason"],
        "source": row["source"],
        "status": status,
    }


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else timestamp(moment)


# -- allowances -------------------------------------------------------------------


@router.put(
    "/{user_id}/allowances/{balance}",
    response_model=CommandOut,
    openapi_extra=IDEMPOTENCY_KEY_DOC,
    summary="Set an allowance",
    description="Resets the balance to `amount` every `period` (day, week, month), computed "
    "in UTC from `anchor` (default now; months by the calendar, the anchor's day clamped to "
    "the month's end). Unused amounts do not accumulate: at each boundary the period's grant "
    "expires and a new one of `amount` is made, for a user with no traffic too. Setting it "
    "again starts over: the current period's grant ends now. Role: admin.",
    responses=problems(401, 403, 404, 409, 413, 422, 503, d409="`idempotency-key-in-use`."),
)
async def set_allowance(
    user_id: UserIdPath, balance: BalancePath, body: AllowanceRequest, context: AdminCommand
) -> Response:
    command = SetAllowance(
        user_id, Balance.of_segment(balance), body.amount, body.period, body.anchor
    )
    return await context.run(command, 200)


@router.delete(
    "/{user_id}/allowances/{balance}",
    response_model=CommandOut,
    openapi_extra=IDEMPOTENCY_KEY_DOC,
    summary="Stop an allowance",
    description="No more resets; the current period's grant runs out at its end. A balance "
    "without an allowance: 422. Role: admin.",
    responses=problems(401, 403, 404, 409, 422, 503, d409="`idempotency-key-in-use`."),
)
async def remove_allowance(
    user_id: UserIdPath, balance: BalancePath, context: AdminCommandMaybeBody
) -> Response:
    return await context.run(RemoveAllowance(user_id, Balance.of_segment(balance)), 200)


@router.get(
    "/{user_id}/allowances",
    response_model=AllowanceList,
    summary="A user's allowances",
    description="Each balance's allowance, its current period and its next reset. From the "
    "projection (`min_position` as for a user). Roles: any.",
    responses=problems(401, 403, 404, 422, 503, 504),
)
async def list_allowances(
    user_id: UserIdPath, services: ReaderAccess, min_position: MinPosition = None
) -> Response:
    await wait_for_projection(services, min_position)
    row = await services.reads.fetch_one(users_table.SELECT_STATE, (user_id,))
    if row is None:
        raise UserNotFound(f"no user with id {user_id!r}")
    state = codec.from_dict(row["fold_state"])
    now = services.clock()
    items = [allowance_view(a, now) for a in state.allowances]
    return Response(orjson.dumps({"items": items}), media_type="application/json")


def allowance_view(allowance: Allowance, now: datetime) -> dict[str, Any]:
    return {
        "balance": allowance.balance.value,
        "amount": allowance.amount,
        "period": allowance.period,
        "anchor": timestamp(allowance.anchor),
        "period_start": _time(allowance.period_start),
        "period_end": _time(allowance.period_end),
        "next_reset_at": timestamp(allowance.next_reset(now)),
        "grant_id": allowance.grant_id,
    }
