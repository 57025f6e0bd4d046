"""Hostile and careless input: each is refused with a 4xx problem and records nothing,
while the values at the very edge of what is allowed are accepted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from tests.e2e.conftest import USER_ROUTES

if TYPE_CHECKING:
    from tests.e2e.conftest import Api

BALANCE_ROUTES = [
    "credits/grants",
    "credits/spends",
    "chat-messages/grants",
    "chat-messages/spends",
]

BAD_AMOUNTS = {
    "negative": -1,
    "zero": 0,
    "fraction": 1.5,
    "float": 2.0,
    "numeric-string": "1",
    "word": "one",
    "true": True,
    "false": False,
    "null": None,
    "huge": 10**30,
    "one-over-the-maximum": 1_000_001,
    "list": [1],
    "object": {"value": 1},
}

BAD_IDS = {
    "65-characters": "a" * 65,
    "empty": "",
    "accented": "élodie",
    "japanese": "ユーザー",
    "emoji": "user-🙂",
    "sql-drop": "x'; DROP TABLE users; --",
    "sql-or": "1' OR '1'='1",
    "space": "a b",
    "slash": "a/b",
    "nul": "a\x00b",
    "newline": "a\nb",
    "percent": "a%20b",
}


@pytest.fixture(scope="module")
def target(api: Api) -> str:
    """A user with something to spend, the target of every hostile request."""
    user_id = api.registered("target")
    api.check_command(api.post(f"/v1/users/{user_id}/credits/grants", {"amount": 100}))
    api.check_command(api.post(f"/v1/users/{user_id}/chat-messages/grants", {"amount": 100}))
    api.current(user_id)
    return user_id


def refused(response: Any) -> None:
    """A 4xx problem, whatever its exact status."""
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text}"
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    body = response.json()
    assert body["status"] == response.status_code
    assert {"type", "title", "detail"} <= body.keys()


# -- amounts ------------------------------------------------------------------------------


@pytest.mark.parametrize("amount", list(BAD_AMOUNTS.values()), ids=list(BAD_AMOUNTS))
@pytest.mark.parametrize("route", BALANCE_ROUTES)
def test_an_amount_that_is_not_a_whole_number_from_1_to_1_000_000_is_refused(
    api: Api, target: str, route: str, amount: Any
) -> None:
    before = api.current(target)

    with api.records_nothing():
        response = api.post(f"/v1/users/{target}/{route}", {"amount": amount, "reason": "x"})

    api.problem(response, 422)
    assert api.current(target) == before


@pytest.mark.parametrize("route", BALANCE_ROUTES)
def test_an_amount_is_required(api: Api, target: str, route: str) -> None:
    with api.records_nothing():
        response = api.post(f"/v1/users/{target}/{route}", {"reason": "no amount"})

    api.problem(response, 422, "validation-error")


@pytest.mark.parametrize(
    ("balance", "prefix"), [("free_credits", "credits"), ("free_chat_messages", "chat-messages")]
)
def test_amounts_of_1_and_1_000_000_are_accepted(api: Api, balance: str, prefix: str) -> None:
    user_id = api.registered()
    start = api.user(user_id)[balance]

    with api.records(4):
        most = api.post(f"/v1/users/{user_id}/{prefix}/grants", {"amount": 1_000_000})
        least = api.post(f"/v1/users/{user_id}/{prefix}/grants", {"amount": 1})
        spend_most = api.post(f"/v1/users/{user_id}/{prefix}/spends", {"amount": 1_000_000})
        spend_least = api.post(f"/v1/users/{user_id}/{prefix}/spends", {"amount": 1})

    assert api.check_command(most)["user"][balance] == start + 1_000_000
    assert api.check_command(least)["user"][balance] == start + 1_000_001
    assert api.check_command(spend_most)["user"][balance] == start + 1
    assert api.check_command(spend_least)["user"][balance] == start


# -- user ids -----------------------------------------------------------------------------


@pytest.mark.parametrize("user_id", list(BAD_IDS.values()), ids=list(BAD_IDS))
def test_a_user_id_outside_1_to_64_plain_characters_cannot_register(api: Api, user_id: str) -> None:
    with api.records_nothing():
        response = api.post("/v1/users", {"id": user_id})

    api.problem(response, 422, "validation-error")


@pytest.mark.parametrize("user_id", [123, None, True, ["a"], {"id": "a"}])
def test_a_user_id_that_is_not_a_string_cannot_register(api: Api, user_id: Any) -> None:
    with api.records_nothing():
        response = api.post("/v1/users", {"id": user_id})

    api.problem(response, 422, "validation-error")


@pytest.mark.parametrize(
    "user_id", ["a" * 64, "A", "0", "Az.09_-", "user.name_with-all.allowed_characters"]
)
def test_a_user_id_of_1_to_64_plain_characters_registers(api: Api, user_id: str) -> None:
    user_id = user_id if len(user_id) == 64 else f"{user_id}{api.new_id('')}"[:64]

    with api.records(1):
        response = api.post("/v1/users", {"id": user_id})

    assert api.check_command(response)["user"]["id"] == user_id


@pytest.mark.parametrize("user_id", list(BAD_IDS.values()), ids=list(BAD_IDS))
@pytest.mark.parametrize(
    ("method", "route", "body"), USER_ROUTES, ids=[f"{m}{r or '/'}" for m, r, _ in USER_ROUTES]
)
def test_a_bad_user_id_in_the_path_is_refused(
    api: Api, target: str, user_id: str, method: str, route: str, body: Any
) -> None:
    path = f"/v1/users/{quote(user_id, safe='')}{route}"

    with api.records_nothing():
        response = api.request(method, path, json=body, follow_redirects=True)

    refused(response)
    assert api.get(f"/v1/users/{target}").status_code == 200  # the users table is still there


@pytest.mark.parametrize("user_id", list(BAD_IDS.values()), ids=list(BAD_IDS))
def test_a_bad_user_id_cannot_be_audited(api: Api, user_id: str) -> None:
    refused(api.get(f"/v1/audit/users/{quote(user_id, safe='')}"))


# -- plans --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plan",
    [
        {"level": "basic"},
        {"level": "basic", "renewal_period": "monthly"},
        {"level": "pro", "renewal_period": "lifetime"},
        {"level": "pro"},
        {"level": "paid", "renewal_period": "monthly"},
        {"level": "free", "renewal_period": "monthly"},
        {"level": "gold", "renewal_period": "lifetime"},
        {"level": "PAID", "renewal_period": "lifetime"},
        {"level": "paid", "renewal_period": "LIFETIME"},
        {"level": ""},
        {"level": None},
        {"level": 1},
        {"renewal_period": "lifetime"},
        {},
    ],
    ids=lambda plan: "-".join(f"{k}={v}" for k, v in plan.items()) or "empty",
)
def test_an_unknown_or_legacy_plan_is_refused(api: Api, target: str, plan: dict[str, Any]) -> None:
    before = api.current(target)

    with api.records_nothing():
        response = api.put(f"/v1/users/{target}/plan", plan)

    api.problem(response, 422)
    assert api.current(target) == before


@pytest.mark.parametrize(
    "plan",
    [
        {"level": "paid"},
        {"level": "paid", "renewal_period": None},
        {"level": "free", "renewal_period": "lifetime"},
    ],
    ids=["paid-without-renewal", "paid-with-null-renewal", "free-with-renewal"],
)
def test_a_plan_and_renewal_that_do_not_go_together_are_refused(
    api: Api, target: str, plan: dict[str, Any]
) -> None:
    with api.records_nothing():
        response = api.put(f"/v1/users/{target}/plan", plan)

    api.problem(response, 422)


@pytest.mark.parametrize(
    ("plan", "shown"),
    [
        ({"level": "paid", "renewal_period": "lifetime"}, ("paid", "lifetime")),
        ({"level": "free"}, ("free", None)),
        ({"level": "free", "renewal_period": None}, ("free", None)),
    ],
)
def test_the_current_plans_are_accepted(
    api: Api, plan: dict[str, Any], shown: tuple[str, str | None]
) -> None:
    user_id = api.registered()

    response = api.put(f"/v1/users/{user_id}/plan", plan)

    user = api.check_command(response, 200)["user"]
    assert (user["level"], user["renewal_period"]) == shown


# -- reasons and unknown fields -----------------------------------------------------------------


@pytest.mark.parametrize(
    "reason", ["r" * 201, "é" * 201, 5, ["why"], {"why": "because"}, True], ids=str
)
def test_a_reason_over_200_characters_or_not_text_is_refused(
    api: Api, target: str, reason: Any
) -> None:
    with api.records_nothing():
        response = api.post(f"/v1/users/{target}/credits/spends", {"amount": 1, "reason": reason})

    api.problem(response, 422, "validation-error")


@pytest.mark.parametrize("reason", ["r" * 200, "é" * 200, "", None, "🙂 <script>'; --"])
def test_a_reason_of_at_most_200_characters_is_kept(api: Api, target: str, reason: Any) -> None:
    with api.records(1):
        response = api.post(f"/v1/users/{target}/credits/spends", {"amount": 1, "reason": reason})

    assert api.check_command(response)["event"]["data"]["reason"] == reason


@pytest.mark.parametrize(
    ("method", "route", "body"),
    [
        ("POST", "", {"id": "someone-new", "level": "paid"}),
        ("POST", "/{id}/credits/grants", {"amount": 1, "free_credits": 1_000_000}),
        ("POST", "/{id}/credits/spends", {"amount": 1, "user_id": "someone-else"}),
        ("POST", "/{id}/chat-messages/spends", {"amount": 1, "Amount": 2}),
        ("PUT", "/{id}/plan", {"level": "paid", "renewal_period": "lifetime", "price": 0}),
    ],
)
def test_a_field_the_contract_does_not_name_is_refused(
    api: Api, target: str, method: str, route: str, body: dict[str, Any]
) -> None:
    with api.records_nothing():
        response = api.request(method, "/v1/users" + route.format(id=target), json=body)

    problem = api.problem(response, 422, "validation-error")
    assert "not permitted" in problem["detail"]


# -- content types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b'{"amount": 1}'),
        ("application/x-www-form-urlencoded", b"amount=1"),
        ("application/x-www-form-urlencoded", b'{"amount": 1}'),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="amount"\r\n\r\n1\r\n--x--\r\n',
        ),
        ("application/xml", b"<amount>1</amount>"),
    ],
)
def test_a_body_sent_as_anything_but_json_is_refused(
    api: Api, target: str, content_type: str, body: bytes
) -> None:
    with api.records_nothing():
        response = api.post(
            f"/v1/users/{target}/credits/spends",
            content=body,
            headers={"Content-Type": content_type},
        )

    assert response.status_code in {415, 422}
    refused(response)


def test_a_body_without_a_content_type_is_refused(api: Api, target: str) -> None:
    request = api.http.build_request(
        "POST",
        f"/v1/users/{target}/credits/spends",
        content=b'{"amount": 1}',
        headers=api.headers("admin"),
    )

    with api.records_nothing():
        response = api.http.send(request)

    assert "content-type" not in request.headers
    refused(response)


# -- idempotency keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["k" * 256, "", "a b", "a\tb", "clé".encode(), b"\xff\xfe"],
    ids=["256-characters", "empty", "space", "tab", "non-ascii", "not-utf8"],
)
def test_an_idempotency_key_that_is_not_1_to_255_printable_characters_is_refused(
    api: Api, target: str, key: str | bytes
) -> None:
    with api.records_nothing():
        response = api.post(
            f"/v1/users/{target}/credits/spends", {"amount": 1}, headers={"Idempotency-Key": key}
        )

    problem = api.problem(response, 422, "validation-error")
    assert "Idempotency-Key" in problem["detail"]


@pytest.mark.parametrize("key", [b"a\x01b", b"a\x1bb", b"a\x7fb"], ids=["soh", "escape", "delete"])
def test_an_idempotency_key_with_control_characters_is_refused(
    api: Api, target: str, key: bytes
) -> None:
    # Such a header is not HTTP: the server refuses the request before the
    # application sees it, with a plain 400.
    with api.records_nothing():
        response = api.post(
            f"/v1/users/{target}/credits/spends", {"amount": 1}, headers={"Idempotency-Key": key}
        )

    assert 400 <= response.status_code < 500


def test_an_idempotency_key_of_255_printable_characters_is_accepted(api: Api, target: str) -> None:
    key = "".join(chr(33 + i % 94) for i in range(255))

    with api.records(1):
        first = api.post(
            f"/v1/users/{target}/credits/spends", {"amount": 1}, headers={"Idempotency-Key": key}
        )
        again = api.post(
            f"/v1/users/{target}/credits/spends", {"amount": 1}, headers={"Idempotency-Key": key}
        )

    assert api.check_command(first)["event"] == api.check_command(again)["event"]
    assert again.headers["idempotent-replayed"] == "true"
