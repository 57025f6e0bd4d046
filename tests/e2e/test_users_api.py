"""The HTTP API's routes as a client uses them, and the exact shapes of their answers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import head, wait_caught_up

if TYPE_CHECKING:
    from tests.e2e.conftest import Api

CONTRACT_OPERATIONS = {
    ("post", "/v1/users"),
    ("post", "/v1/users/{user_id}/credits/grants"),
    ("post", "/v1/users/{user_id}/credits/spends"),
    ("post", "/v1/users/{user_id}/chat-messages/grants"),
    ("post", "/v1/users/{user_id}/chat-messages/spends"),
    ("put", "/v1/users/{user_id}/plan"),
    ("get", "/v1/users/{user_id}"),
    ("get", "/v1/users/{user_id}/events"),
    ("get", "/v1/users/{user_id}/state"),
    ("get", "/v1/events"),
    ("get", "/v1/audit/users/{user_id}"),
    ("get", "/v1/projections"),
    ("post", "/v1/projections/users/rebuild"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
}


def grant_many(api: Api, user_id: str, count: int) -> None:
    """`count` grants of one credit, sent a few at a time."""

    def grant(_: int) -> int:
        return api.post(f"/v1/users/{user_id}/credits/grants", {"amount": 1}).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(grant, range(count))) == {201}


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- commands -------------------------------------------------------------------


def test_registering_a_user_answers_with_the_event_and_the_new_user(api: Api) -> None:
    user_id = api.new_id("newcomer")

    response = api.post("/v1/users", {"id": user_id})

    body = api.check_command(response, 201)
    event, user = body["event"], body["user"]
    assert event["type"] == "UserRegistered"
    assert event["user_id"] == user_id
    assert event["version"] == 1
    assert event["data"]["user_id"] == user_id
    assert {k: user[k] for k in ("id", "level", "renewal_period", "version")} == {
        "id": user_id,
        "level": "free",
        "renewal_period": None,
        "version": 1,
    }
    assert (user["free_credits"], user["free_chat_messages"]) == (10, 20)


@pytest.mark.parametrize(
    ("method", "route", "body", "status", "event_type", "data", "after"),
    [
        (
            "POST",
            "credits/grants",
            {"amount": 5, "reason": "welcome"},
            201,
            "CreditsGranted",
            {"amount": 5, "reason": "welcome"},
            {"free_credits": 15, "free_chat_messages": 20},
        ),
        (
            "POST",
            "credits/spends",
            {"amount": 3, "reason": "image"},
            201,
            "CreditsSpent",
            {"amount": 3, "reason": "image"},
            {"free_credits": 7, "free_chat_messages": 20},
        ),
        (
            "POST",
            "chat-messages/grants",
            {"amount": 4},
            201,
            "ChatMessagesGranted",
            {"amount": 4, "reason": None},
            {"free_credits": 10, "free_chat_messages": 24},
        ),
        (
            "POST",
            "chat-messages/spends",
            {"amount": 2, "reason": "chat"},
            201,
            "ChatMessagesSpent",
            {"amount": 2, "reason": "chat"},
            {"free_credits": 10, "free_chat_messages": 18},
        ),
        (
            "PUT",
            "plan",
            {"level": "paid", "renewal_period": "lifetime"},
            200,
            "PlanChanged",
            {"level": "paid", "renewal_period": "lifetime"},
            {"level": "paid", "renewal_period": "lifetime"},
        ),
    ],
)
def test_each_command_answers_with_its_event_and_the_user_right_after_it(
    api: Api,
    method: str,
    route: str,
    body: dict[str, Any],
    status: int,
    event_type: str,
    data: dict[str, Any],
    after: dict[str, Any],
) -> None:
    registered = api.register()
    user_id = registered["user"]["id"]

    response = api.request(method, f"/v1/users/{user_id}/{route}", json=body)

    answer = api.check_command(response, status)
    event, user = answer["event"], answer["user"]
    assert event["type"] == event_type
    assert data.items() <= event["data"].items()  # and what this release adds
    assert event["version"] == 2
    assert event["position"] > registered["event"]["position"]
    assert {k: user[k] for k in after} == after


def test_a_plan_goes_back_to_free_without_a_renewal_period(api: Api) -> None:
    user_id = api.registered()
    api.check_command(
        api.put(f"/v1/users/{user_id}/plan", {"level": "paid", "renewal_period": "lifetime"}), 200
    )

    back = api.check_command(api.put(f"/v1/users/{user_id}/plan", {"level": "free"}), 200)

    assert back["event"]["data"] == {"level": "free", "renewal_period": None}
    assert (back["user"]["level"], back["user"]["renewal_period"]) == ("free", None)


# -- reads of one user --------------------------------------------------------------


def test_a_user_reads_as_the_last_command_left_them(api: Api) -> None:
    user_id = api.registered()
    spent = api.check_command(
        api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 4, "reason": "x"})
    )

    response = api.get(f"/v1/users/{user_id}", params={"min_position": spent["event"]["position"]})

    user = api.check_user(api.json(response))
    assert user == spent["user"]


def test_a_users_history_lists_each_event_oldest_first_with_the_state_after_it(
    api: Api,
) -> None:
    user_id = api.new_id()
    answers = [api.check_command(api.post("/v1/users", {"id": user_id}))]
    answers.append(
        api.check_command(api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 1}))
    )
    answers.append(
        api.check_command(api.post(f"/v1/users/{user_id}/chat-messages/grants", {"amount": 2}))
    )
    answers.append(
        api.check_command(
            api.put(f"/v1/users/{user_id}/plan", {"level": "paid", "renewal_period": "lifetime"}),
            200,
        )
    )

    page = api.json(api.get(f"/v1/users/{user_id}/events"))

    assert set(page) == {"items", "next"}
    assert page["next"] is None
    assert [item["version"] for item in page["items"]] == [1, 2, 3, 4]
    for item, answer in zip(page["items"], answers, strict=True):
        api.check_event(item)
        assert {k: item[k] for k in answer["event"]} == answer["event"]
        assert api.check_user(item["user"]) == answer["user"]


def test_a_users_history_pages_by_version_with_a_cursor(api: Api) -> None:
    user_id = api.registered()
    grant_many(api, user_id, 105)  # 106 events with the registration

    first = api.json(api.get(f"/v1/users/{user_id}/events"))
    second = api.json(api.get(f"/v1/users/{user_id}/events", params={"after_version": 100}))
    small = api.json(api.get(f"/v1/users/{user_id}/events", params={"limit": 2}))
    following = api.json(
        api.get(f"/v1/users/{user_id}/events", params={"after_version": small["next"], "limit": 2})
    )
    exact_end = api.json(
        api.get(f"/v1/users/{user_id}/events", params={"after_version": 104, "limit": 2})
    )
    past_end = api.json(api.get(f"/v1/users/{user_id}/events", params={"after_version": 106}))
    most = api.json(api.get(f"/v1/users/{user_id}/events", params={"limit": 1000}))

    assert [i["version"] for i in first["items"]] == list(range(1, 101))  # limit defaults to 100
    assert first["next"] == 100
    assert [i["version"] for i in second["items"]] == list(range(101, 107))
    assert second["next"] is None
    assert ([i["version"] for i in small["items"]], small["next"]) == ([1, 2], 2)
    assert ([i["version"] for i in following["items"]], following["next"]) == ([3, 4], 4)
    assert ([i["version"] for i in exact_end["items"]], exact_end["next"]) == ([105, 106], None)
    assert past_end == {"items": [], "next": None}
    assert (len(most["items"]), most["next"]) == (106, None)
    assert most["items"][-1]["user"]["free_credits"] == 10 + 105


def test_the_global_log_pages_every_users_events_in_position_order(api: Api) -> None:
    start = head(api.database)
    first_user, second_user = api.new_id(), api.new_id()
    api.register(first_user)
    api.register(second_user)
    grant_many(api, first_user, 60)
    grant_many(api, second_user, 60)  # 122 events after `start`

    pages = []
    after = start
    while after is not None:
        page = api.json(api.get("/v1/events", params={"after": after}))
        assert set(page) == {"items", "next"}
        pages.append(page)
        after = page["next"]
    small = api.json(api.get("/v1/events", params={"after": start, "limit": 3}))

    items = [item for page in pages for item in page["items"]]
    assert [len(page["items"]) for page in pages] == [100, 22]
    assert pages[0]["next"] == items[99]["position"]
    for item in items:
        api.check_event(item)
    positions = [item["position"] for item in items]
    assert positions == sorted(positions)
    assert positions[0] > start
    assert len(set(positions)) == 122
    assert {item["user_id"] for item in items} == {first_user, second_user}
    assert [i["position"] for i in small["items"]] == positions[:3]
    assert small["next"] == positions[2]


def test_the_state_at_a_version_is_replayed_from_history(api: Api) -> None:
    user_id = api.registered()
    api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 3})
    api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 4})

    at_one = api.json(api.get(f"/v1/users/{user_id}/state", params={"version": 1}))
    at_two = api.json(api.get(f"/v1/users/{user_id}/state", params={"version": 2}))
    past_the_end = api.json(api.get(f"/v1/users/{user_id}/state", params={"version": 99}))

    assert (api.check_user(at_one)["version"], at_one["free_credits"]) == (1, 10)
    assert (api.check_user(at_two)["version"], at_two["free_credits"]) == (2, 7)
    assert (past_the_end["version"], past_the_end["free_credits"]) == (3, 3)


def test_the_state_at_a_time_includes_the_event_recorded_at_that_time(api: Api) -> None:
    user_id = api.registered()
    spent = api.check_command(api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 3}))
    api.check_command(api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 4}))
    recorded_at = spent["event"]["recorded_at"]
    moment = parse_time(recorded_at)
    just_before = (moment - timedelta(microseconds=1)).isoformat(timespec="microseconds")
    elsewhere = moment.astimezone(timezone(timedelta(hours=2))).isoformat(timespec="microseconds")

    at_event = api.json(api.get(f"/v1/users/{user_id}/state", params={"at": recorded_at}))
    before_event = api.json(api.get(f"/v1/users/{user_id}/state", params={"at": just_before}))
    same_instant = api.json(api.get(f"/v1/users/{user_id}/state", params={"at": elsewhere}))

    assert at_event == spent["user"]
    assert (api.check_user(before_event)["version"], before_event["free_credits"]) == (1, 10)
    assert same_instant == spent["user"]


def test_the_state_before_a_user_existed_is_not_found(api: Api) -> None:
    registered = api.register()
    user_id = registered["user"]["id"]
    before = parse_time(registered["event"]["recorded_at"]) - timedelta(seconds=1)

    response = api.get(f"/v1/users/{user_id}/state", params={"at": before.isoformat()})

    api.problem(response, 404, "user-not-found")


def test_an_audit_finds_the_projection_consistent_with_a_replay(api: Api) -> None:
    user_id = api.registered()
    spent = api.check_command(api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 2}))
    api.user(user_id, at_least=spent["event"]["position"])

    audit = api.json(api.get(f"/v1/audit/users/{user_id}"))

    assert {"consistent", "projected", "replayed", "differences"} <= audit.keys()
    assert audit["consistent"] is True
    assert audit["differences"] == []
    assert api.check_user(audit["projected"]) == spent["user"]
    assert api.check_user(audit["replayed"]) == spent["user"]


# -- the projection, health and metrics -------------------------------------------------


def test_projections_report_their_position_head_lag_and_status(api: Api) -> None:
    api.registered()
    wait_caught_up(api.database)

    listing = api.json(api.get("/v1/projections"))

    assert set(listing) == {"items"}
    (users,) = [item for item in listing["items"] if item["name"] == "users"]
    assert {"name", "version", "position", "head", "lag", "status", "error"} <= users.keys()
    assert users["status"] == "running"
    assert users["error"] is None
    assert isinstance(users["version"], str) and users["version"]
    assert users["position"] == users["head"] == head(api.database)
    assert users["lag"] == 0


def test_liveness_and_readiness_answer_without_a_key(api: Api) -> None:
    alive = api.get("/healthz", role=None)
    ready = api.get("/readyz", role=None)

    assert api.json(alive)["status"] == "ok"
    assert api.json(ready)["status"] == "ready"


def scrape(api: Api) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = api.get("/metrics", role=None)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_and_time_commands_and_show_the_projection(api: Api) -> None:
    user_id = api.registered()
    before = scrape(api)

    api.check_command(api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 10}))
    api.problem(api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 1}), 409)
    wait_caught_up(api.database)
    after = scrape(api)
    projection = api.projection()

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    total = "ledger_commands_total"
    assert delta(total, command="SpendCredits", outcome="ok") == 1
    assert delta(total, command="SpendCredits", outcome="insufficient-balance") == 1
    seconds = "ledger_command_duration_seconds"
    assert delta(f"{seconds}_count", command="SpendCredits") == 2
    assert delta(f"{seconds}_sum", command="SpendCredits") > 0
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in after.items()
        if name == f"{seconds}_bucket" and dict(labels)["command"] == "SpendCredits"
    )
    assert len(buckets) > 2
    assert [value for _, value in buckets] == sorted(value for _, value in buckets)
    assert buckets[-1] == (float("inf"), sample(after, f"{seconds}_count", command="SpendCredits"))
    users = {"projection": "users"}
    assert sample(after, "ledger_projection_position", **users) == projection["position"]
    assert sample(after, "ledger_projection_head", **users) == projection["head"]
    assert sample(after, "ledger_projection_lag", **users) == 0


def test_the_openapi_document_and_the_docs_are_served(api: Api) -> None:
    document = api.json(api.get("/openapi.json", role=None))
    docs = api.get("/docs", role=None)

    operations = {(method, path) for path, item in document["paths"].items() for method in item}
    assert operations >= CONTRACT_OPERATIONS
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
