"""End-to-end fixtures: the real `ledger serve`, driven over HTTP as its users drive it.

`api` is one served ledger shared by every module whose tests each use user ids
of their own. A module that needs a ledger to itself (a rebuild, an outage, the
role table that starts a rebuild) sets `OWN_LEDGER = True`; one that needs it
set up otherwise (the fuzzer) starts its own through `serve_ledger`. Either is
on a fresh database of its own.
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from ledger.db import Database
from tests.helpers import API_KEYS, ServedLedger, head, rows

PROBLEM_MEDIA_TYPE = "application/problem+json"

#: The events not caused by time: the expiry worker records time's own (an
#: expiry, an allowance's period) whenever they fall due, a test's block or not.
_BY_COMMANDS = (
    "SELECT count(*) FROM ledger_events "
    "WHERE convert_from(state, 'UTF8')::jsonb -> 'cause' ->> 'actor_role' IS DISTINCT FROM 'time'"
)

USER_FIELDS = {
    "id",
    "level",
    "renewal_period",
    "free_credits",
    "free_chat_messages",
    "free_credits_held",
    "free_chat_messages_held",
    "free_credits_next_expiry_at",
    "free_credits_next_expiry_amount",
    "free_chat_messages_next_expiry_at",
    "free_chat_messages_next_expiry_amount",
    "version",
    "position",
    "updated_at",
}
EVENT_FIELDS = {"id", "type", "user_id", "version", "position", "recorded_at", "data"}
EVENT_TYPES = {
    "UserRegistered",
    "UserImported",
    "CreditsGranted",
    "CreditsSpent",
    "CreditsExpired",
    "ChatMessagesGranted",
    "ChatMessagesSpent",
    "ChatMessagesExpired",
    "PlanChanged",
    "AllowanceSet",
    "AllowanceRemoved",
    "AllowanceGranted",
    "HoldPlaced",
    "HoldSettled",
    "HoldReleased",
    "HoldExpired",
    "PurchaseCompleted",
    "PurchaseRefunded",
    "PurchaseDisputed",
    "DisputeReinstated",
}
RFC3339_MICROSECONDS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class Api:
    """The served ledger as a client sees it: an HTTP client, the keys of each
    role, and the checks every test makes of what comes back."""

    def __init__(self, served: ServedLedger) -> None:
        self.served = served
        self.database: Database = served.database
        self.url = served.url
        self.http = httpx.Client(
            base_url=served.url,
            timeout=30.0,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
        )

    def close(self) -> None:
        self.http.close()

    # -- requests -------------------------------------------------------------

    def headers(self, role: str | None = "admin", **extra: str) -> dict[str, str]:
        """The Authorization header of `role` (none for None), and `extra`."""
        headers = {} if role is None else {"Authorization": f"Bearer {API_KEYS[role]}"}
        headers.update(extra)
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        role: str | None = "admin",
        key: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """`key` is an Idempotency-Key; `headers` are added last (and win)."""
        sent = self.headers(role)
        if key is not None:
            sent["Idempotency-Key"] = key
        sent.update(headers or {})
        return self.http.request(method, path, headers=sent, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        if body is not None:
            kwargs["json"] = body
        return self.request("POST", path, **kwargs)

    def put(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        if body is not None:
            kwargs["json"] = body
        return self.request("PUT", path, **kwargs)

    # -- stories ----------------------------------------------------------------

    @staticmethod
    def new_id(prefix: str = "user") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    def register(self, user_id: str | None = None) -> dict[str, Any]:
        """A new user (a fresh id unless given); the command's response."""
        response = self.post("/v1/users", {"id": user_id or self.new_id()})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def registered(self, prefix: str = "user") -> str:
        """The id of a new user, already in the projection."""
        created = self.register(self.new_id(prefix))
        self.user(created["user"]["id"], at_least=created["event"]["position"])
        return str(created["user"]["id"])

    def user(self, user_id: str, *, at_least: int = 0) -> dict[str, Any]:
        """The projected user, once the projection has applied `at_least`."""
        response = self.get(f"/v1/users/{user_id}", params={"min_position": at_least})
        assert response.status_code == 200, response.text
        return dict(response.json())

    def current(self, user_id: str) -> dict[str, Any]:
        """The projected user, once every event recorded so far is applied."""
        return self.user(user_id, at_least=head(self.database))

    def projection(self) -> dict[str, Any]:
        response = self.get("/v1/projections")
        assert response.status_code == 200, response.text
        (users,) = [item for item in response.json()["items"] if item["name"] == "users"]
        return dict(users)

    def wait_until_running(self, timeout: float = 30.0) -> dict[str, Any]:
        """Until the projector leads and has applied everything recorded."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError, AssertionError):
                projection = self.projection()
                if projection["status"] == "running" and projection["lag"] == 0:
                    return projection
            if time.monotonic() > deadline:
                raise AssertionError(f"the users projection is not running after {timeout}s")
            time.sleep(0.05)

    # -- what is recorded ---------------------------------------------------------

    def event_count(self) -> int:
        """How many events commands recorded (not time: see `_BY_COMMANDS`)."""
        return int(rows(self.database, _BY_COMMANDS)[0][0])

    @contextlib.contextmanager
    def records(self, events: int) -> Iterator[None]:
        """The block records exactly `events` events."""
        ((last,),) = rows(
            self.database, "SELECT COALESCE(max(notification_id), 0) FROM ledger_events"
        )
        before = self.event_count()
        yield
        after = self.event_count()
        if after - before != events:
            recorded = rows(
                self.database,
                "SELECT notification_id, originator_id, topic, "
                "convert_from(state, 'UTF8')::jsonb -> 'cause' FROM ledger_events "
                "WHERE notification_id > %s ORDER BY notification_id",
                (last,),
            )
            raise AssertionError(f"recorded {after - before} events, expected {events}: {recorded}")

    def records_nothing(self) -> contextlib.AbstractContextManager[None]:
        return self.records(0)

    # -- what comes back ------------------------------------------------------------

    @staticmethod
    def problem(response: httpx.Response, status: int, type_: str | None = None) -> dict[str, Any]:
        """An RFC 9457 problem with `status` (and `type_`, if given): its body."""
        assert response.status_code == status, f"{response.status_code}: {response.text}"
        assert response.headers["content-type"].split(";")[0] == PROBLEM_MEDIA_TYPE
        body = response.json()
        assert {"type", "title", "status", "detail"} <= body.keys(), body
        assert body["status"] == status
        assert isinstance(body["title"], str) and body["title"]
        assert isinstance(body["detail"], str) and body["detail"]
        assert isinstance(body["type"], str) and body["type"]
        if type_ is not None:
            assert body["type"] == type_, body
        return dict(body)

    @staticmethod
    def json(response: httpx.Response, status: int = 200) -> Any:
        assert response.status_code == status, f"{response.status_code}: {response.text}"
        assert response.headers["content-type"].split(";")[0] == "application/json"
        return response.json()

    @staticmethod
    def check_user(user: dict[str, Any]) -> dict[str, Any]:
        """A User as the contract describes it."""
        assert user.keys() >= USER_FIELDS, user
        assert isinstance(user["id"], str)
        assert user["level"] in {"free", "paid", "basic", "pro"}
        assert user["renewal_period"] in {None, "lifetime", "monthly"}
        for balance in ("free_credits", "free_chat_messages"):
            value = user[balance]
            assert value is None or (type(value) is int and 0 <= value <= 2_147_483_647), user
        assert type(user["version"]) is int and user["version"] >= 1
        assert type(user["position"]) is int and user["position"] >= 1
        assert RFC3339_MICROSECONDS.match(user["updated_at"]), user["updated_at"]
        return user

    @staticmethod
    def check_event(event: dict[str, Any]) -> dict[str, Any]:
        """An Event as the contract describes it."""
        assert event.keys() >= EVENT_FIELDS, event
        assert UUID.match(event["id"]), event["id"]
        assert event["type"] in EVENT_TYPES
        assert isinstance(event["user_id"], str)
        assert type(event["version"]) is int and event["version"] >= 1
        assert type(event["position"]) is int and event["position"] >= 1
        assert RFC3339_MICROSECONDS.match(event["recorded_at"]), event["recorded_at"]
        assert isinstance(event["data"], dict)
        return event

    def check_command(self, response: httpx.Response, status: int = 201) -> dict[str, Any]:
        """A command's answer: `{"event", "user"}`, the user right after the event."""
        body = self.json(response, status)
        assert {"event", "user"} <= body.keys(), body
        event, user = self.check_event(body["event"]), self.check_user(body["user"])
        assert user["id"] == event["user_id"]
        assert user["version"] == event["version"]
        assert user["position"] == event["position"]
        assert user["updated_at"] == event["recorded_at"]
        return dict(body)


def _create_database(server: Database, template: str) -> Database:
    name = f"ledger_e2e_{uuid.uuid4().hex[:12]}"
    with server.connect() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    return server.with_name(name)


def _drop_database(server: Database, database: Database) -> None:
    with server.connect() as conn, contextlib.suppress(psycopg.Error):
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database.name))
        )


@contextlib.contextmanager
def _served(server: Database, template: str, **env: str) -> Iterator[Api]:
    """`ledger serve` on a fresh database, its projector running."""
    database = _create_database(server, template)
    served = ServedLedger(database, env=env)
    api = None
    try:
        served.start()
        api = Api(served)
        api.wait_until_running()
        yield api
    finally:
        if api is not None:
            api.close()
        served.stop()
        _drop_database(server, database)


@pytest.fixture(scope="session")
def serve_ledger(
    server: Database, template: str
) -> Callable[..., contextlib.AbstractContextManager[Api]]:
    """`with serve_ledger(LEDGER_SETTING="value") as api:` a ledger of one's own."""
    return functools.partial(_served, server, template)


@pytest.fixture(scope="session")
def shared_api(
    serve_ledger: Callable[..., contextlib.AbstractContextManager[Api]],
) -> Iterator[Api]:
    with serve_ledger() as served:
        yield served


@pytest.fixture(scope="module")
def api(
    request: pytest.FixtureRequest,
    serve_ledger: Callable[..., contextlib.AbstractContextManager[Api]],
) -> Iterator[Api]:
    """The served ledger shared by tests that use user ids of their own; a
    module that sets `OWN_LEDGER = True` gets one to itself."""
    if getattr(request.module, "OWN_LEDGER", False):
        with serve_ledger() as served:
            yield served
    else:
        yield request.getfixturevalue("shared_api")


#: (method, path under /v1/users/{id}, body) of every route about one user.
USER_ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/credits/grants", {"amount": 1}),
    ("POST", "/credits/spends", {"amount": 1}),
    ("POST", "/chat-messages/grants", {"amount": 1}),
    ("POST", "/chat-messages/spends", {"amount": 1}),
    ("PUT", "/plan", {"level": "paid", "renewal_period": "lifetime"}),
    ("GET", "", None),
    ("GET", "/events", None),
    ("GET", "/state", None),
]
