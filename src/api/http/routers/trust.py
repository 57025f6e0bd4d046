"""Trust: each balance explained from the history, and the hash chain's head
for a witness to keep."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from starlette.responses import Response

from api.http.deps import AdminAccess, ReaderAccess, RoleCheckedRoute
from api.http.params import UserIdPath
from api.http.routers import problems
from api.http.schemas import ChainHeadOut, ExplainOut
from ledger import chain, events_table
from ledger.db import translate_errors
from ledger.domain import as_of
from ledger.domain.explain import explain, sentence
from ledger.errors import UserNotFound
from ledger.times import timestamp
from projections import history

router = APIRouter(tags=["trust"], route_class=RoleCheckedRoute)

#: How many of the latest events an explanation recounts.
RECENT = 10


@router.get(
    "/v1/users/{user_id}/explain",
    response_model=ExplainOut,
    summary="Why is the balance what it is?",
    description="Each balance in numbers and words, replayed from the history by the one "
    "fold, as of now (expiries at their instant): what is available, what is held and by "
    "which holds, every active grant (what remains, its expiry, its source), what expires "
    "next, each allowance's next reset; and the latest changes, each in a sentence. Roles: "
    "any.",
    responses=problems(401, 403, 404, 422, 503),
)
def explain_user(user_id: UserIdPath, services: ReaderAccess) -> Response:
    with translate_errors():
        found = history.state_at(services.log, user_id)
        if found is None:
            raise UserNotFound(f"no user with id {user_id!r}")
        steps, _ = history.timeline(
            services.log, user_id, after_version=max(found.state.version - RECENT, 0)
        )
    now = services.clock()
    body: dict[str, Any] = {
        "user_id": user_id,
        "as_of": timestamp(now),
        "version": found.state.version,
        "position": found.position,
        "level": found.state.level,
        "renewal_period": found.state.renewal_period,
        "balances": explain(as_of(found.state, now), now),
        "recent": [
            {
                "position": step.recorded.position,
                "version": step.recorded.event.originator_version,
                "recorded_at": timestamp(step.recorded.event.timestamp),
                "type": type(step.recorded.event).__name__,
                "sentence": sentence(step.recorded.event),
                "request_id": (step.recorded.event.cause or {}).get("request_id"),
            }
            for step in reversed(steps)
        ],
    }
    return Response(orjson.dumps(body), media_type="application/json")


@router.get(
    "/v1/chain/head",
    response_model=ChainHeadOut,
    summary="The hash chain's head",
    description="The last event's link in the hash chain: keep it somewhere else (a "
    "witness) and check it later with `ledger verify --expect HASH@POSITION`. Role: admin.",
    responses=problems(401, 403, 503),
)
def chain_head(services: AdminAccess) -> Response:
    with translate_errors(), services.pool.connection() as conn:
        row = conn.execute(
            f"SELECT c.position, c.hash, e.state FROM ({chain.HEAD}) AS c "
            f"JOIN {events_table.TABLE} AS e ON e.notification_id = c.position"
        ).fetchone()
    if row is None:
        body = {"position": 0, "hash": chain.GENESIS.hex(), "recorded_at": None}
    else:
        recorded = events_table.recorded_at(bytes(row[2]))
        body = {
            "position": int(row[0]),
            "hash": bytes(row[1]).hex(),
            "recorded_at": None if recorded is None else timestamp(recorded),
        }
    return Response(orjson.dumps(body), media_type="application/json")
