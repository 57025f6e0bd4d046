"""Every failure of the contract, as a client meets it: an RFC 9457 problem
(application/problem+json with type, title, status and detail), and nothing recorded."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.conftest import USER_ROUTES
from tests.helpers import head, ledger_process

if TYPE_CHECKING:
    from tests.e2e.conftest import Api

MAX_BALANCE = 2_147_483_647
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def imported(api: Api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Users brought in from the old CRUD table with `ledger import`: one at the
    balance limit, one from before the credit columns (legacy plan, NULL balances)."""
    ids = {"rich": api.new_id("rich"), "legacy": api.new_id("legacy")}
    path: Path = tmp_path_factory.mktemp("import") / "users.csv"
    path.write_text(
        "id,level,renewal_period,free_credits,free_chat_messages\n"
        f"{ids['rich']},paid,lifetime,{MAX_BALANCE - 1000},{MAX_BALANCE}\n"
        f"{ids['legacy']},basic,monthly,,\n"
    )
    process = ledger_process(
        "import", str(path), database=api.database, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, (out, err)
    for user_id in ids.values():
        api.user(user_id, at_least=head(api.database))
    yield ids


# -- 401 and 405, 404 for what does not exist ---------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/users", {"id": "nobody-registers-me"}),
        ("GET", "/v1/events", None),
        ("GET", "/v1/projections", None),
        ("POST", "/v1/projections/users/rebuild", None),
    ],
)
def test_a_request_without_a_key_is_unauthorized(
    api: Api, method: str, path: str, body: Any
) -> None:
    with api.records_nothing():
        response = api.request(method, path, role=None, json=body)

    api.problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer not-a-key-of-ours",
        "Bearer test-admin-key-and-more",
        "Bearer",
        "Basic dGVzdC1hZG1pbi1rZXk6",
        "Token test-admin-key",
        "test-admin-key",
    ],
)
def test_an_unknown_key_or_another_scheme_is_unauthorized(api: Api, authorization: str) -> None:
    user_id = api.registered()

    with api.records_nothing():
        spend = api.post(
            f"/v1/users/{user_id}/credits/spends",
            {"amount": 1},
            role=None,
            headers={"Authorization": authorization},
        )
    read = api.get(f"/v1/users/{user_id}", role=None, headers={"Authorization": authorization})

    api.problem(spend, 401, "unauthorized")
    api.problem(read, 401, "unauthorized")


@pytest.mark.parametrize(("method", "path", "body"), USER_ROUTES)
def test_a_user_that_does_not_exist_is_not_found(
    api: Api, method: str, path: str, body: Any
) -> None:
    missing = api.new_id("missing")

    with api.records_nothing():
        response = api.request(method, f"/v1/users/{missing}{path}", json=body)

    problem = api.problem(response, 404, "user-not-found")
    assert missing in problem["detail"]


def test_auditing_a_user_that_does_not_exist_is_not_found(api: Api) -> None:
    api.problem(api.get(f"/v1/audit/users/{api.new_id('missing')}"), 404, "user-not-found")


def test_a_route_that_does_not_exist_is_a_problem_too(api: Api) -> None:
    api.problem(api.get("/v1/accounts"), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/v1/users/{id}"), ("PATCH", "/v1/users/{id}"), ("DELETE", "/v1/events")],
)
def test_events_and_users_cannot_be_deleted_or_patched(api: Api, method: str, path: str) -> None:
    user_id = api.registered()
    before = api.json(api.get(f"/v1/users/{user_id}/events"))

    with api.records_nothing():
        response = api.request(method, path.format(id=user_id), json={"free_credits": 1000})

    api.problem(response, 405)
    assert api.json(api.get(f"/v1/users/{user_id}/events")) == before


# -- 409: refusals of the domain ---------------------------------------------------------


def test_registering_an_existing_user_is_a_conflict(api: Api) -> None:
    user_id = api.registered()

    with api.records_nothing():
        response = api.post("/v1/users", {"id": user_id})

    api.problem(response, 409, "user-exists")
    assert api.user(user_id)["version"] == 1


@pytest.mark.parametrize(
    ("route", "balance", "amount"),
    [("credits/spends", "free_credits", 11), ("chat-messages/spends", "free_chat_messages", 21)],
)
def test_spending_more_than_the_balance_is_refused(
    api: Api, route: str, balance: str, amount: int
) -> None:
    user_id = api.registered()
    before = api.user(user_id)

    with api.records_nothing():
        response = api.post(f"/v1/users/{user_id}/{route}", {"amount": amount})

    api.problem(response, 409, "insufficient-balance")
    assert api.user(user_id) == before
    all_of_it = api.post(f"/v1/users/{user_id}/{route}", {"amount": amount - 1})
    assert api.check_command(all_of_it)["user"][balance] == 0


def test_a_grant_past_the_balance_limit_is_refused(api: Api, imported: dict[str, str]) -> None:
    rich = imported["rich"]

    with api.records_nothing():
        credits = api.post(f"/v1/users/{rich}/credits/grants", {"amount": 1001})
        chat = api.post(f"/v1/users/{rich}/chat-messages/grants", {"amount": 1})

    api.problem(credits, 409, "balance-limit")
    api.problem(chat, 409, "balance-limit")
    up_to_the_limit = api.post(f"/v1/users/{rich}/credits/grants", {"amount": 1000})
    assert api.check_command(up_to_the_limit)["user"]["free_credits"] == MAX_BALANCE


def test_a_user_imported_without_balances_spends_nothing_until_a_grant(
    api: Api, imported: dict[str, str]
) -> None:
    legacy = imported["legacy"]
    shown = api.user(legacy)

    with api.records_nothing():
        spend = api.post(f"/v1/users/{legacy}/credits/spends", {"amount": 1})
    granted = api.check_command(api.post(f"/v1/users/{legacy}/credits/grants", {"amount": 5}))

    assert (shown["level"], shown["renewal_period"]) == ("basic", "monthly")
    assert (shown["free_credits"], shown["free_chat_messages"]) == (None, None)
    api.problem(spend, 409, "insufficient-balance")
    assert granted["user"]["free_credits"] == 5
    assert granted["user"]["free_chat_messages"] is None


# -- 422: what cannot be read -----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"amount": 1',
        b'{"amount": 1,}',
        b"{'amount': 1}",
        b'{"amount": 1} {"amount": 2}',
        b"amount=1",
        b'{"amount": 1, "reason": "\xff\xfe"}',
        b"[" * 5000 + b"]" * 5000,
    ],
    ids=[
        "truncated",
        "trailing-comma",
        "single-quotes",
        "two-documents",
        "form",
        "not-utf8",
        "deeply-nested",
    ],
)
def test_a_body_that_is_not_json_is_refused(api: Api, body: bytes) -> None:
    user_id = api.registered()

    with api.records_nothing():
        response = api.post(
            f"/v1/users/{user_id}/credits/spends",
            content=body,
            headers={"Content-Type": "application/json"},
        )

    api.problem(response, 422)


@pytest.mark.parametrize(
    "body",
    [b"", b"null", b"[]", b'"amount"', b"1", b"{}"],
    ids=["empty", "null", "array", "string", "number", "no-fields"],
)
def test_a_json_body_of_the_wrong_shape_is_refused(api: Api, body: bytes) -> None:
    user_id = api.registered()

    with api.records_nothing():
        response = api.post(
            f"/v1/users/{user_id}/credits/spends",
            content=body,
            headers={"Content-Type": "application/json"},
        )

    api.problem(response, 422, "validation-error")


def test_malformed_json_is_named_as_such(api: Api) -> None:
    user_id = api.registered()

    response = api.post(
        f"/v1/users/{user_id}/credits/spends",
        content=b'{"amount": ',
        headers={"Content-Type": "application/json"},
    )

    api.problem(response, 422, "invalid-json")


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/users/{id}", {"min_position": "-1"}),
        ("/v1/users/{id}", {"min_position": "soon"}),
        ("/v1/users/{id}", {"min_position": "1.5"}),
        ("/v1/users/{id}/events", {"limit": "0"}),
        ("/v1/users/{id}/events", {"limit": "1001"}),
        ("/v1/users/{id}/events", {"limit": "ten"}),
        ("/v1/users/{id}/events", {"after_version": "-1"}),
        ("/v1/users/{id}/state", {"version": "0"}),
        ("/v1/users/{id}/state", {"version": "last"}),
        ("/v1/users/{id}/state", {"at": "yesterday"}),
        ("/v1/users/{id}/state", {"at": "2026-01-31T12:00:00"}),
        ("/v1/users/{id}/state", {"at": "0"}),
        ("/v1/users/{id}/state", {"at": "1800000000"}),
        ("/v1/users/{id}/state", {"at": "2026-01-31"}),
        ("/v1/users/{id}/state", {"at": "2026-01-31T12:00Z"}),
        ("/v1/users/{id}/state", {"at": "2026-01-31T12:00:00+0100"}),
        ("/v1/users/{id}/state", {"at": "2026-01-31T12:00:00,5Z"}),
        ("/v1/users/{id}/state", {"at": "2026-02-30T12:00:00Z"}),
        ("/v1/users/{id}/state", {"at": "2026-01-31T12:00:00Z", "version": "1"}),
        ("/v1/events", {"after": "-1"}),
        ("/v1/events", {"after": "start"}),
        ("/v1/events", {"limit": "0"}),
        ("/v1/events", {"limit": "1001"}),
    ],
)
def test_an_invalid_query_is_refused(api: Api, path: str, params: dict[str, str]) -> None:
    user_id = api.registered()

    response = api.get(path.format(id=user_id), params=params)

    api.problem(response, 422, "validation-error")


@pytest.mark.parametrize(
    ("at", "status"),
    [
        ("9999-12-31T23:59:59.999999-23:59", 200),
        ("9999-12-31T23:59:59.123456789Z", 200),
        ("0001-01-01T00:00:00+23:59", 404),
        ("0001-01-01T00:00:00Z", 404),
    ],
)
def test_the_state_at_the_ends_of_time_is_an_answer(api: Api, at: str, status: int) -> None:
    user_id = api.registered()

    response = api.get(f"/v1/users/{user_id}/state", params={"at": at})

    assert response.status_code == status, response.text


# -- 413: too large ---------------------------------------------------------------------


def padded(size: int) -> bytes:
    """A valid spend of one credit, padded with spaces to `size` bytes."""
    start, end = b'{"amount": 1', b"}"
    return start + b" " * (size - len(start) - len(end)) + end


def test_a_body_over_64_kib_is_too_large(api: Api) -> None:
    user_id = api.registered()

    with api.records_nothing():
        response = api.post(
            f"/v1/users/{user_id}/credits/spends",
            content=padded(MAX_BODY + 1),
            headers={"Content-Type": "application/json"},
        )

    api.problem(response, 413, "payload-too-large")


def test_a_streamed_body_over_64_kib_is_too_large(api: Api) -> None:
    user_id = api.registered()

    def chunks() -> Iterator[bytes]:
        body = padded(MAX_BODY + 4096)
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    with api.records_nothing():
        response = api.post(
            f"/v1/users/{user_id}/credits/spends",
            content=chunks(),
            headers={"Content-Type": "application/json"},
        )

    assert "content-length" not in response.request.headers
    api.problem(response, 413, "payload-too-large")


def test_a_body_of_exactly_64_kib_is_accepted(api: Api) -> None:
    user_id = api.registered()

    with api.records(1):
        response = api.post(
            f"/v1/users/{user_id}/credits/spends",
            content=padded(MAX_BODY),
            headers={"Content-Type": "application/json"},
        )

    assert api.check_command(response)["user"]["free_credits"] == 9


# -- 504: read-your-writes that cannot be served --------------------------------------------


def test_waiting_for_a_position_never_reached_times_out_after_5_seconds(api: Api) -> None:
    user_id = api.registered()
    unreachable = head(api.database) + 1_000_000

    started = time.monotonic()
    response = api.get(f"/v1/users/{user_id}", params={"min_position": unreachable})
    waited = time.monotonic() - started

    problem = api.problem(response, 504, "projection-timeout")
    assert str(unreachable) in problem["detail"]
    assert 4.5 <= waited < 8


# -- the key is checked before anything else -----------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-key-of-ours"])
def test_a_request_without_a_valid_key_is_unauthorized_whatever_its_body(
    api: Api, authorization: str | None
) -> None:
    user_id = api.registered()
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization

    response = api.post(
        f"/v1/users/{user_id}/credits/spends", content=b'{"amount": ', role=None, headers=headers
    )

    api.problem(response, 401, "unauthorized")


@pytest.mark.parametrize(
    ("role", "path"),
    [
        ("reader", "/v1/users/{id}/credits/spends"),
        ("service", "/v1/users/{id}/credits/grants"),
        ("service", "/v1/users/{id}/plan"),
    ],
)
@pytest.mark.parametrize("body", [b'{"amount": ', b"\xff\xfe not even text"])
def test_a_key_whose_role_is_too_weak_is_forbidden_whatever_its_body(
    api: Api, role: str, path: str, body: bytes
) -> None:
    user_id = api.registered()
    method = "PUT" if path.endswith("/plan") else "POST"

    with api.records_nothing():
        response = api.request(
            method,
            path.format(id=user_id),
            content=body,
            role=role,
            headers={"Content-Type": "application/json"},
        )

    api.problem(response, 403, "forbidden")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/stripe/events?after=%00",
        "/v1/stripe/events?limit=2&after=a%00b",
        "/v1/users/{id}/holds?after=hold_%00",
        "/v1/users/{id}/holds/hold_%00",
        "/v1/users/{id}%00/events",
        "/v1/webhook-endpoints/ep_%00",
    ],
)
def test_a_nul_character_in_a_path_or_query_is_refused(api: Api, path: str) -> None:
    user_id = api.registered()
    with api.records_nothing():
        response = api.get(path.format(id=user_id))
    api.problem(response, 422, "validation-error")
