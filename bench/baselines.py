"""The baselines: thin FastAPI apps with the ledger's spend route, each served by
uvicorn as the ledger is (one worker, same FastAPI, same machine).

- `eventsourcing`: the eventsourcing library used plainly, one save per
  command: `repository.get`, the aggregate's `spend`, `save`. Plain `def`
  routes, so FastAPI runs them on its thread pool, as a user of a synchronous
  library writes them. A save that loses a race for the same user (the
  library's IntegrityError) is answered 409, for the client to retry: only
  the 201s count as spends.
- `crud`: the spend as a plain CRUD app does it: a conditional UPDATE of the
  balance and an audit INSERT, in one transaction, on an async psycopg pool.
- `insert`: one INSERT per request: the floor of HTTP plus PostgreSQL.
- `fastapi`: the simplest FastAPI app: the spend's route answers
  `{"status": "ok"}` without reading the body or the database.
- `asgi`: a bare ASGI callable answering the same: the floor of Python HTTP
  with this server (uvicorn, uvloop, httptools), one process.

Run one with `python -m bench.baselines NAME --port PORT`; the database is
BENCH_DATABASE_URL, the accepted key BENCH_API_KEY.
"""

from __future__ import annotations

import argparse
import hmac
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from psycopg_pool import AsyncConnectionPool

from api.http.schemas import AmountRequest
from ledger.db import Database

#: Connections of the async baselines' pools (the ledger's writer uses one, its
#: reads a pool of 4; more than 10 only adds contention on two cores).
POOL_SIZE = 10
SPEND_PATH = "/v1/users/{user_id}/credits/spends"

CRUD_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id            text PRIMARY KEY,
    free_credits  integer NOT NULL CHECK (free_credits >= 0)
);
CREATE TABLE IF NOT EXISTS credit_audit (
    id          bigserial PRIMARY KEY,
    user_id     text NOT NULL,
    amount      integer NOT NULL,
    reason      text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
"""

_SPEND = (
    "UPDATE users SET free_credits = free_credits - %s "
    "WHERE id = %s AND free_credits >= %s RETURNING free_credits"
)
_AUDIT = "INSERT INTO credit_audit (user_id, amount, reason) VALUES (%s, %s, %s) RETURNING id"


def _key_check(key: str) -> Callable[[Request], Any]:
    expected = f"Bearer {key}".encode()

    async def check(request: Request) -> None:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise HTTPException(401, "unknown API key")

    return check


def _healthz(app: FastAPI) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}


# -- the eventsourcing library, plainly -------------------------------------------


def eventsourcing_app(database: Database, key: str) -> FastAPI:
    from eventsourcing.application import AggregateNotFoundError
    from eventsourcing.persistence import IntegrityError

    from ledger.application import Ledger
    from ledger.domain import Balance, Cause, User
    from ledger.errors import InsufficientBalance

    # The library's own pool, sized as a sync app on a thread pool needs it.
    ledger = Ledger.open(database, pool_size=2, max_overflow=8)
    authorized = Depends(_key_check(key))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        ledger.close()

    app = FastAPI(lifespan=lifespan)
    _healthz(app)

    @app.post(SPEND_PATH, status_code=201, dependencies=[authorized])
    def spend(user_id: str, body: AmountRequest) -> dict[str, Any]:
        try:
            user: User = ledger.repository.get(user_id)
        except AggregateNotFoundError:
            raise HTTPException(404, f"no user {user_id!r}") from None
        try:
            user.spend(
                Balance.CREDITS,
                body.amount,
                body.reason,
                Cause(actor_role="service"),
                datetime.now(UTC),
            )
        except InsufficientBalance as e:
            raise HTTPException(409, e.detail) from None
        try:
            recordings = ledger.save(user)
        except IntegrityError:
            # Another request saved this user's next version first.
            raise HTTPException(409, "the user changed meanwhile; retry") from None
        return {
            "user_id": user_id,
            "free_credits": user.state.free_credits,
            "version": user.version,
            "position": recordings[-1].notification.id,
        }

    return app


# -- plain CRUD -------------------------------------------------------------------


def _pool_app(database: Database) -> tuple[FastAPI, AsyncConnectionPool[Any]]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database.conninfo(),
        min_size=POOL_SIZE,
        max_size=POOL_SIZE,
        kwargs={"autocommit": True},
        open=False,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await pool.open(wait=True)
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(lifespan=lifespan)
    _healthz(app)
    return app, pool


def crud_app(database: Database, key: str) -> FastAPI:
    app, pool = _pool_app(database)

    @app.post(SPEND_PATH, status_code=201, dependencies=[Depends(_key_check(key))])
    async def spend(user_id: str, body: AmountRequest) -> dict[str, Any]:
        async with pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(_SPEND, (body.amount, user_id, body.amount))
            row = await cursor.fetchone()
            if row is None:
                found = await conn.execute("SELECT 1 FROM users WHERE id = %s", (user_id,))
                if await found.fetchone() is None:
                    raise HTTPException(404, f"no user {user_id!r}")
                raise HTTPException(409, "insufficient balance")
            await conn.execute(_AUDIT, (user_id, body.amount, body.reason))
        return {"user_id": user_id, "free_credits": row[0]}

    return app


# -- one INSERT per request -------------------------------------------------------------


def insert_app(database: Database, key: str) -> FastAPI:
    app, pool = _pool_app(database)

    @app.post(SPEND_PATH, status_code=201, dependencies=[Depends(_key_check(key))])
    async def spend(user_id: str, body: AmountRequest) -> dict[str, Any]:
        async with pool.connection() as conn:
            cursor = await conn.execute(_AUDIT, (user_id, body.amount, body.reason))
            row = await cursor.fetchone()
        assert row is not None
        return {"user_id": user_id, "id": row[0]}

    return app


# -- no work at all -----------------------------------------------------------------


def fastapi_app(database: Database, key: str) -> FastAPI:
    app = FastAPI()
    _healthz(app)

    @app.post(SPEND_PATH, status_code=201)
    async def spend(user_id: str) -> dict[str, str]:
        return {"status": "ok"}

    return app


_OK = b'{"status":"ok"}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"15")]


async def bare_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the request's body, answers {"status":"ok"} (201 to a POST)."""
    if scope["type"] == "lifespan":
        await receive()  # startup
        await send({"type": "lifespan.startup.complete"})
        await receive()  # shutdown
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    status = 201 if scope["method"] == "POST" else 200
    await send({"type": "http.response.start", "status": status, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _OK})


def asgi_app(database: Database, key: str) -> Any:
    return bare_asgi


APPS: dict[str, Callable[[Database, str], Any]] = {
    "eventsourcing": eventsourcing_app,
    "crud": crud_app,
    "insert": insert_app,
    "fastapi": fastapi_app,
    "asgi": asgi_app,
}


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.baselines")
    parser.add_argument("name", choices=sorted(APPS))
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    database = Database(os.environ["BENCH_DATABASE_URL"])
    app = APPS[args.name](database, os.environ["BENCH_API_KEY"])
    # As `ledger serve` runs it.
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
