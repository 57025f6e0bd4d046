"""PostgreSQL out of reach, and back: 503 database-unavailable with Retry-After
while it cannot be reached, nothing recorded, and service as before once it is back.

A ledger of its own: its database is made unreachable (no new connections, every
session ended) and reachable again, as an outage or a restart would."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from psycopg import sql

from ledger.db import Database
from tests.helpers import wait_until

if TYPE_CHECKING:
    from tests.e2e.conftest import Api

#: A client that waits longer than this for a 503 is not told to retry; it hangs.
PROMPTLY = 5.0


OWN_LEDGER = True


@pytest.fixture(scope="module")
def user_id(api: Api) -> str:
    return api.registered("steady")


@pytest.fixture(autouse=True)
def back_in_service(api: Api, user_id: str) -> Iterator[None]:
    """Each test starts with a ledger in service, and leaves it in service."""
    yield
    wait_until(lambda: in_service(api, user_id), timeout=60, every=0.2)


def in_service(api: Api, user_id: str) -> bool:
    """Every kind of request works: commands, reads of each pool, readiness."""
    try:
        answers = [
            api.post(f"/v1/users/{user_id}/chat-messages/grants", {"amount": 1}),
            api.get(f"/v1/users/{user_id}"),
            api.get(f"/v1/users/{user_id}/events", params={"limit": 1}),
            api.get("/v1/events", params={"limit": 1}),
            api.get("/readyz"),
        ]
    except httpx.HTTPError:
        return False
    return all(answer.status_code < 300 for answer in answers)


def end_sessions(server: Database, database: Database) -> None:
    """End every session of `database`, as a restart of PostgreSQL would, and
    wait until they are gone."""
    with server.connect() as conn:
        ended = [
            row[0]
            for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (database.name,),
            ).fetchall()
        ]
        conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (ended,))

        def gone() -> bool:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (ended,)
            ).fetchone()
            return row is not None and row[0] == 0

        wait_until(gone, timeout=10)


def sessions(server: Database, database: Database) -> int:
    with server.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database.name,)
        ).fetchone()
    return int(row[0]) if row else 0


def allow_connections(server: Database, database: Database, allowed: bool) -> None:
    with server.connect() as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                sql.Identifier(database.name), sql.Literal(allowed)
            )
        )


@contextlib.contextmanager
def unreachable(server: Database, api: Api) -> Iterator[None]:
    """PostgreSQL refuses every connection to the ledger's database."""
    allow_connections(server, api.database, False)
    try:
        end_sessions(server, api.database)
        assert sessions(server, api.database) == 0
        yield
    finally:
        allow_connections(server, api.database, True)


def restarted(server: Database, api: Api) -> None:
    """Every connection the ledger holds is dropped; new ones are accepted."""
    end_sessions(server, api.database)


def works(call: Callable[[], httpx.Response], times: int = 4) -> None:
    """`call` succeeds `times` times in a row (the connections it uses are sound)."""
    streak = 0

    def succeeds() -> bool:
        nonlocal streak
        streak = streak + 1 if call().status_code < 300 else 0
        return streak >= times

    wait_until(succeeds, timeout=30)


def timed(call: Callable[[], httpx.Response]) -> httpx.Response:
    """The answer, which must come within PROMPTLY seconds."""
    try:
        return call()
    except httpx.TimeoutException:
        pytest.fail(f"no answer within {PROMPTLY} s")


def unavailable(api: Api, response: httpx.Response) -> None:
    api.problem(response, 503, "database-unavailable")
    assert int(response.headers["retry-after"]) >= 1


ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/v1/users", {"id": "registered-during-outage"}),
    ("POST", "/v1/users/{id}/credits/grants", {"amount": 1}),
    ("POST", "/v1/users/{id}/credits/spends", {"amount": 1}),
    ("POST", "/v1/users/{id}/chat-messages/grants", {"amount": 1}),
    ("POST", "/v1/users/{id}/chat-messages/spends", {"amount": 1}),
    ("PUT", "/v1/users/{id}/plan", {"level": "paid", "renewal_period": "lifetime"}),
    ("GET", "/v1/users/{id}", None),
    ("GET", "/v1/users/{id}?min_position=1", None),
    ("GET", "/v1/users/{id}/events", None),
    ("GET", "/v1/users/{id}/state?version=1", None),
    ("GET", "/v1/audit/users/{id}", None),
    ("GET", "/v1/projections", None),
    ("POST", "/v1/projections/users/rebuild", None),
]


def test_while_postgresql_is_unreachable_every_route_says_so_and_records_nothing(
    api: Api, server: Database, user_id: str
) -> None:
    before_events = api.event_count()
    before_user = api.current(user_id)
    answers = {}

    with unreachable(server, api):
        for method, path, body in ROUTES:
            answers[method, path] = timed(
                lambda m=method, p=path, b=body: api.request(
                    m, p.format(id=user_id), json=b, timeout=PROMPTLY
                )
            )
        ready = timed(lambda: api.get("/readyz", role=None, timeout=PROMPTLY))
        alive = timed(lambda: api.get("/healthz", role=None, timeout=PROMPTLY))
        metrics = timed(lambda: api.get("/metrics", role=None, timeout=PROMPTLY))

    for response in answers.values():
        unavailable(api, response)
    api.problem(ready, 503)
    assert "retry-after" in ready.headers
    assert alive.status_code == 200
    assert metrics.status_code == 200
    assert api.event_count() == before_events
    wait_until(lambda: api.get(f"/v1/users/{user_id}").status_code == 200, timeout=30)
    assert api.current(user_id) == before_user
    assert api.get("/v1/users/registered-during-outage").status_code == 404
    assert api.projection()["rebuild_requested"] is False


def test_once_postgresql_is_back_commands_are_accepted_again(
    api: Api, server: Database, user_id: str
) -> None:
    with unreachable(server, api):
        during = api.post(f"/v1/users/{user_id}/credits/grants", {"amount": 1}, timeout=PROMPTLY)

    started = time.monotonic()
    wait_until(
        lambda: api.post(f"/v1/users/{user_id}/credits/grants", {"amount": 1}).status_code == 201,
        timeout=10,
        every=0.1,
    )

    unavailable(api, during)
    assert time.monotonic() - started < 3


def test_the_global_log_says_promptly_that_postgresql_is_unreachable(
    api: Api, server: Database
) -> None:
    with unreachable(server, api):
        response = timed(lambda: api.get("/v1/events", timeout=PROMPTLY))

    unavailable(api, response)


def test_after_postgresql_restarts_the_next_command_is_accepted(
    api: Api, server: Database, user_id: str
) -> None:
    works(lambda: api.post(f"/v1/users/{user_id}/credits/grants", {"amount": 1}))

    restarted(server, api)
    response = api.post(f"/v1/users/{user_id}/credits/grants", {"amount": 1})

    api.check_command(response)


def test_after_postgresql_restarts_the_next_read_of_a_user_succeeds(
    api: Api, server: Database, user_id: str
) -> None:
    works(lambda: api.get(f"/v1/users/{user_id}"))

    restarted(server, api)
    response = api.get(f"/v1/users/{user_id}")

    assert api.json(response)["id"] == user_id


def test_after_postgresql_restarts_the_next_read_of_a_history_succeeds(
    api: Api, server: Database, user_id: str
) -> None:
    works(lambda: api.get(f"/v1/users/{user_id}/events", params={"limit": 1}))

    restarted(server, api)
    response = api.get(f"/v1/users/{user_id}/events", params={"limit": 1})

    assert api.json(response)["items"][0]["user_id"] == user_id
