"""The webhook endpoints API, as an admin uses it, on a ledger that sends to
public https URLs only (the defaults): what is shown, what is refused, and how
a retried request with an Idempotency-Key is answered."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers import rows, wait_until

if TYPE_CHECKING:
    from tests.e2e.conftest import Api

#: A public address, written as one (no name to resolve).
PUBLIC = "https://93.184.215.14/ledger-hooks"


@pytest.fixture
def endpoint(api: Api) -> Iterator[dict[str, Any]]:
    body = {"url": PUBLIC, "event_types": ["credits.spent"], "description": "the app"}
    created = dict(api.json(api.post("/v1/webhook-endpoints", body), 201))
    yield created
    api.request("DELETE", f"/v1/webhook-endpoints/{created['id']}")


def test_an_endpoint_is_created_with_its_secret_shown_once(
    api: Api, endpoint: dict[str, Any]
) -> None:
    secret = endpoint["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert endpoint["url"] == PUBLIC and endpoint["event_types"] == ["credits.spent"]
    assert endpoint["disabled"] is False and endpoint["low_balance_threshold"] is None

    shown = api.json(api.get(f"/v1/webhook-endpoints/{endpoint['id']}"))
    listed = api.json(api.get("/v1/webhook-endpoints", params={"limit": 1000}))["items"]

    assert "secret" not in shown and shown == {k: v for k, v in endpoint.items() if k != "secret"}
    assert [e for e in listed if e["id"] == endpoint["id"]] == [shown]
    assert all("secret" not in e for e in listed)
    assert secret not in api.get("/v1/webhook-endpoints").text


def stored_answers(api: Api, *keys: str) -> list[str]:
    """The answers kept for Idempotency-Keys, as PostgreSQL holds them."""
    found = rows(
        api.database,
        "SELECT outcome::text FROM ledger_idempotency_keys WHERE key = ANY(%s)",
        (list(keys),),
    )
    assert len(found) == len(keys)
    return [str(text) for (text,) in found]


def test_a_retried_create_or_rotation_answers_the_same_secret(api: Api) -> None:
    body = {"url": PUBLIC, "event_types": ["*"]}
    create_key, rotate_key = api.new_id("create"), api.new_id("rotate")
    first = api.json(api.post("/v1/webhook-endpoints", body, key=create_key), 201)
    path = f"/v1/webhook-endpoints/{first['id']}"
    try:
        again = api.post("/v1/webhook-endpoints", body, key=create_key)
        assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == first and first["secret"].startswith("whsec_")
        listed = api.json(api.get("/v1/webhook-endpoints", params={"limit": 1000}))["items"]
        assert [e["id"] for e in listed].count(first["id"]) == 1
        other = api.post("/v1/webhook-endpoints", {**body, "description": "x"}, key=create_key)
        api.problem(other, 422, "idempotency-key-reused")

        rotated = api.json(api.post(f"{path}/rotate-secret", key=rotate_key))
        retried = api.post(f"{path}/rotate-secret", key=rotate_key)
        assert retried.headers["Idempotent-Replayed"] == "true" and retried.json() == rotated
        assert rotated["secret"] != first["secret"]
        # The first secret is the previous one now, and signs for a day: shown still.
        assert api.post("/v1/webhook-endpoints", body, key=create_key).json() == first

        kept = " ".join(stored_answers(api, create_key, rotate_key))
        assert first["secret"] not in kept and rotated["secret"] not in kept
        assert "whsec_" not in kept and kept.count("secret_sha256") == 2

        api.json(api.post(f"{path}/rotate-secret"))  # the first secret no longer signs
        assert api.post("/v1/webhook-endpoints", body, key=create_key).json() == {
            **first,
            "secret": None,
        }
        assert api.post(f"{path}/rotate-secret", key=rotate_key).json() == rotated
    finally:
        api.request("DELETE", path)
    gone = api.post(f"{path}/rotate-secret", key=rotate_key)
    assert gone.status_code == 200 and gone.json() == {**rotated, "secret": None}


def test_an_endpoint_is_changed_disabled_enabled_and_deleted(
    api: Api, endpoint: dict[str, Any]
) -> None:
    path = f"/v1/webhook-endpoints/{endpoint['id']}"
    changed = api.json(
        api.request(
            "PATCH",
            path,
            json={"event_types": ["*"], "low_balance_threshold": 5, "description": None},
        )
    )
    assert changed["event_types"] == ["*"] and changed["low_balance_threshold"] == 5
    assert changed["description"] is None and changed["url"] == PUBLIC

    off = api.json(api.request("PATCH", path, json={"disabled": True}))
    assert off["disabled"] is True and off["disabled_reason"] == "disabled by an operator"
    on = api.json(api.request("PATCH", path, json={"disabled": False}))
    assert on["disabled"] is False and on["disabled_reason"] is None

    assert api.json(api.request("DELETE", path))["id"] == endpoint["id"]
    api.problem(api.get(path), 404, "not-found")
    api.problem(api.request("DELETE", path), 404, "not-found")


def test_a_rotation_shows_the_new_secret_once(api: Api, endpoint: dict[str, Any]) -> None:
    rotated = api.json(api.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret"))

    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != endpoint["secret"]
    assert rotated["previous_secret_until"] is not None
    shown = api.json(api.get(f"/v1/webhook-endpoints/{endpoint['id']}"))
    assert "secret" not in shown


def test_deliveries_are_listed_a_page_at_a_time(api: Api, endpoint: dict[str, Any]) -> None:
    user_id = api.registered("paged")
    for _ in range(3):
        api.check_command(api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 1}))
    path = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries"

    def listed() -> list[dict[str, Any]]:
        return list(api.json(api.get(path, params={"limit": 1000}))["items"])

    wait_until(lambda: len(listed()) == 3)
    first = api.json(api.get(path, params={"limit": 2}))
    second = api.json(api.get(path, params={"limit": 2, "after": first["next"]}))

    assert [d["id"] for d in first["items"] + second["items"]] == [d["id"] for d in listed()]
    assert second["next"] is None
    assert {d["type"] for d in listed()} == {"credits.spent"}
    assert all(d["user_id"] == user_id for d in listed())
    api.problem(api.get(path, params={"after": "msg_nope"}), 422)
    api.problem(api.get(path, params={"status": "lost"}), 422)


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.215.14/hooks",  # http, without LEDGER_WEBHOOKS_ALLOW_HTTP
        "https://127.0.0.1/hooks",
        "https://localhost:8443/hooks",
        "https://10.0.0.7/hooks",
        "https://192.168.1.1/hooks",
        "https://172.16.0.1/hooks",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hooks",
        "https://[fe80::1]/hooks",
        "https://[::ffff:127.0.0.1]/hooks",
        "https://224.0.0.1/hooks",
        "https://0.0.0.0/hooks",
        "https://user:pass@93.184.215.14/hooks",
        "ftp://93.184.215.14/hooks",
        "https:///hooks",
        "https://no-such-host.invalid/hooks",
    ],
)
def test_an_endpoint_the_ledger_will_not_send_to_is_refused(api: Api, url: str) -> None:
    before = api.json(api.get("/v1/webhook-endpoints", params={"limit": 1000}))["items"]

    refused = api.post("/v1/webhook-endpoints", {"url": url, "event_types": ["*"]})

    api.problem(refused, 422, "invalid-webhook-url")
    after = api.json(api.get("/v1/webhook-endpoints", params={"limit": 1000}))["items"]
    assert after == before


def test_a_change_to_an_address_the_ledger_will_not_send_to_is_refused(
    api: Api, endpoint: dict[str, Any]
) -> None:
    path = f"/v1/webhook-endpoints/{endpoint['id']}"
    refused = api.request("PATCH", path, json={"url": "https://127.0.0.1/x"})

    api.problem(refused, 422, "invalid-webhook-url")
    assert api.json(api.get(path))["url"] == PUBLIC


@pytest.mark.parametrize(
    "body",
    [
        {"url": PUBLIC, "event_types": []},
        {"url": PUBLIC, "event_types": ["credits.lost"]},
        {"url": PUBLIC},
        {"event_types": ["*"]},
        {"url": PUBLIC, "event_types": ["*"], "low_balance_threshold": -1},
        {"url": PUBLIC, "event_types": ["*"], "low_balance_threshold": 2**31},
        {"url": PUBLIC, "event_types": ["*"], "low_balance_threshold": "5"},
        {"url": PUBLIC + "x" * 2100, "event_types": ["*"]},
        {"url": PUBLIC, "event_types": ["*"], "secret": "whsec_mine"},
    ],
)
def test_a_bad_endpoint_is_a_422(api: Api, body: dict[str, Any]) -> None:
    api.problem(api.post("/v1/webhook-endpoints", body), 422)


@pytest.mark.parametrize(
    "body", [{"url": None}, {"event_types": None}, {"disabled": None}, {"disabled": "yes"}]
)
def test_a_bad_change_is_a_422(api: Api, endpoint: dict[str, Any], body: dict[str, Any]) -> None:
    api.problem(api.request("PATCH", f"/v1/webhook-endpoints/{endpoint['id']}", json=body), 422)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/webhook-endpoints/ep_none", None),
        ("PATCH", "/v1/webhook-endpoints/ep_none", {"disabled": True}),
        ("DELETE", "/v1/webhook-endpoints/ep_none", None),
        ("POST", "/v1/webhook-endpoints/ep_none/rotate-secret", None),
        ("GET", "/v1/webhook-endpoints/ep_none/deliveries", None),
        ("POST", "/v1/webhook-endpoints/ep_none/recover", {"since": "2026-01-01T00:00:00Z"}),
        ("POST", "/v1/webhook-deliveries/msg_none/retry", None),
    ],
)
def test_an_unknown_id_is_a_404(api: Api, method: str, path: str, body: Any) -> None:
    api.problem(api.request(method, path, json=body), 404, "not-found")


@pytest.mark.parametrize("role", ["service", "reader"])
def test_only_an_admin_manages_endpoints(api: Api, role: str) -> None:
    api.problem(api.get("/v1/webhook-endpoints", role=role), 403, "forbidden")
    created = api.post("/v1/webhook-endpoints", {"url": PUBLIC, "event_types": ["*"]}, role=role)
    api.problem(created, 403, "forbidden")
