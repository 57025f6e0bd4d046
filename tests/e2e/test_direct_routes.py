"""The routes called directly at the edge (api.http.direct) answer exactly as
FastAPI does: the same story of requests, in order and not, sent to a ledger
that calls its endpoints directly and to one where FastAPI serves every
request (LEDGER_DIRECT_ROUTES=false), each on a fresh database, gets the
same statuses, headers and bodies (but for times and random ids)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Api

U = "/v1/users"
JSON = {"Content-Type": "application/json"}

#: (method, path, role, headers, body): bodies are bytes, sent as they are.
Step = tuple[str, str, str | None, dict[str, str], bytes | None]
#: Not a request: wait until the projection has applied everything.
SETTLE: Step = ("", "", None, {}, None)


def _steps() -> list[Step]:
    def post(path: str, body: bytes | None, role: str | None = "admin", **headers: str) -> Step:
        return ("POST", path, role, {**JSON, **headers}, body)

    def get(path: str, role: str | None = "reader") -> Step:
        return ("GET", path, role, {}, None)

    alice, bob = f"{U}/alice", f"{U}/bob"
    return [
        # registrations: in order, replayed, refused, malformed
        post(U, b'{"id": "alice"}', "service", **{"Idempotency-Key": "reg-a"}),
        post(U, b'{"id": "alice"}', "service", **{"Idempotency-Key": "reg-a"}),
        post(U, b'{"id": "alice"}'),
        post(U, b'{"id": "bob"}'),
        post(U, b'{"id": "bad id"}'),
        post(U, b'{"id": "carol", "extra": 1}'),
        post(U, b'{"id": 5}'),
        post(U, b'{"id": "carol"'),
        post(U, b"[]"),
        post(U, b"null"),
        post(U, b""),
        post(U, b'{"id": "carol"}', "reader"),
        ("POST", U, "admin", {"Content-Type": "text/plain"}, b'{"id": "carol"}'),
        ("POST", U, "admin", {}, b'{"id": "carol"}'),
        post(U, b'{"id": "carol"}', "admin", **{"Idempotency-Key": "has space"}),
        post(U, b'{"id": "\\ud800"}'),
        # spends and grants, at their bounds
        post(f"{alice}/credits/spends", b'{"amount": 3, "reason": "chat"}', "service"),
        post(f"{alice}/credits/spends", b'{"amount": 1000}', "service"),
        post(f"{alice}/credits/spends", b'{"amount": 0}', "service"),
        post(f"{alice}/credits/spends", b'{"amount": 1.0}', "service"),
        post(f"{alice}/credits/spends", b'{"amount": "1"}', "service"),
        post(f"{alice}/credits/spends", b'{"amount": 1e400}', "service"),
        post(f"{alice}/credits/spends", b'{"amount": NaN}', "service"),
        post(f"{alice}/credits/spends", b'{"amount": 99999999999999999999999}', "service"),
        post(f"{alice}/credits/spends", b'{"amount": 1, "amount": 2}', "service"),
        post(f"{U}/nobody/credits/spends", b'{"amount": 1}', "service"),
        post(f"{U}/{'x' * 65}/credits/spends", b'{"amount": 1}', "service"),
        post(f"{alice}/chat-messages/spends", b'{"amount": 2}', "service"),
        post(f"{alice}/credits/grants", b'{"amount": 5, "priority": 10}', "service"),
        post(f"{alice}/credits/grants", b'{"amount": 5, "priority": 10}'),
        post(
            f"{alice}/credits/grants",
            b'{"amount": 5, "expires_at": "2099-01-01T00:00:00Z"}',
        ),
        post(f"{alice}/credits/grants", b'{"amount": 5, "expires_at": 1700000000}'),
        post(f"{alice}/chat-messages/grants", b'{"amount": 2147483647}'),
        ("PUT", f"{alice}/plan", "admin", JSON, b'{"level": "paid", "renewal_period": "lifetime"}'),
        ("PUT", f"{alice}/plan", "admin", JSON, b'{"level": "pro"}'),
        # holds: placed, settled, released, refused
        post(
            f"{alice}/credits/holds",
            b'{"amount": 4, "ttl_seconds": 60}',
            "service",
            **{"Idempotency-Key": "hold-1"},
        ),
        post(f"{alice}/credits/holds", b'{"amount": 4, "ttl_seconds": 0}', "service"),
        post(
            f"{alice}/chat-messages/holds",
            b'{"amount": 1}',
            "service",
            **{"Idempotency-Key": "hold-2"},
        ),
        post(f"{bob}/credits/holds", b'{"amount": 4000}', "service"),
        # reads, once the projection has applied every command
        SETTLE,
        get(alice),
        get(f"{alice}?min_position=1"),
        get(f"{alice}?min_position=-1"),
        get(f"{alice}?min_position=1&min_position=2"),
        get(f"{alice}?other=1"),
        get(f"{U}/nobody"),
        get(alice, role=None),
        get(f"{alice}/holds"),
        get(f"{alice}/holds?status=open&limit=1"),
        get(f"{alice}/holds?limit=0"),
        get(f"{alice}/grants"),
        get(f"{alice}/allowances"),
        get(f"{alice}/holds/hold_unknown"),
        ("HEAD", alice, "reader", {}, None),
        ("DELETE", alice, "admin", {}, None),
        get("/healthz", role=None),
    ]


_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_RANDOM_ID = re.compile(r"^(hold|grant|req)_[0-9A-Za-z]+$")


def _normal(value: Any) -> Any:
    """A body with what differs between two runs (times, random ids) masked."""
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, str):
        if _TIME.match(value):
            return "<time>"
        if _UUID.match(value) or _RANDOM_ID.match(value):
            return "<id>"
    return value


_COMPARED_HEADERS = (
    "content-type",
    "idempotent-replayed",
    "retry-after",
    "www-authenticate",
    "allow",
)


def _run(api: Api, steps: list[Step]) -> list[dict[str, Any]]:
    answers = []
    for method, path, role, headers, body in steps:
        if not method:
            api.wait_until_running()
            continue
        response = api.request(method, path, role=role, headers=headers, content=body)
        shown: Any = response.text
        if response.headers.get("content-type", "").endswith("json") and response.content:
            shown = _normal(response.json())
        answers.append(
            {
                "request": f"{method} {path} {body!r}",
                "status": response.status_code,
                "headers": {h: response.headers.get(h) for h in _COMPARED_HEADERS},
                "body": shown,
            }
        )
    return answers


@pytest.fixture(scope="module")
def two_ledgers(
    serve_ledger: Callable[..., contextlib.AbstractContextManager[Api]],
) -> Iterator[tuple[Api, Api]]:
    with (
        serve_ledger() as direct,
        serve_ledger(LEDGER_DIRECT_ROUTES="false") as framework,
    ):
        yield direct, framework


def test_every_answer_is_the_one_fastapi_gives(two_ledgers: tuple[Api, Api]) -> None:
    direct, framework = two_ledgers
    steps = _steps()
    by_direct, by_framework = _run(direct, steps), _run(framework, steps)
    for mine, theirs in zip(by_direct, by_framework, strict=True):
        assert mine == theirs
    statuses = {answer["status"] for answer in by_direct}
    # The story reaches every kind of answer: it is a comparison of something.
    assert {200, 201, 401, 403, 404, 405, 409, 422} <= statuses, statuses
