"""What an endpoint hears of an event, where the ledger may send, and when it
tries again: without a database or a network."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from api.integrations.webhooks import schedule, signing
from api.integrations.webhooks.safety import Policy, UnsafeUrl
from ledger.commands import Context, RegisterUser, SpendChatMessages, SpendCredits
from ledger.domain import EVENT_TYPES, Balance, Cause, User, UserEvent, UserState
from projections.webhooks.messages import (
    ALL_TYPES,
    DEPLETED,
    LOW,
    MESSAGE_TYPES,
    Message,
    body,
    message_id,
    messages_of,
    subscribed,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CAUSE = Context(Cause("admin", "key_test", "req_1", None), NOW)


def steps(*commands: object) -> list[tuple[UserEvent, UserState | None, UserState]]:
    """Each event of a new user's commands, with the state before and after it."""
    user: User = RegisterUser("ann").decide(None, CAUSE)
    for command in commands:
        command.decide(user, CAUSE)  # type: ignore[attr-defined]
    found = []
    state: UserState | None = None
    for event in user.collect_events():
        after = event.evolve(state)
        found.append((event, state, after))
        state = after
    return found


def types(threshold: int | None, *commands: object) -> list[list[str]]:
    return [
        [m.type for m in messages_of(event, before, after, threshold)]
        for event, before, after in steps(*commands)
    ]


def test_every_event_type_has_a_message_type() -> None:
    assert set(MESSAGE_TYPES) == set(EVENT_TYPES.values())
    assert len(set(ALL_TYPES)) == len(ALL_TYPES)


def test_spending_to_zero_also_says_the_balance_is_depleted() -> None:
    assert types(None, SpendCredits("ann", 4), SpendCredits("ann", 6)) == [
        ["user.registered"],
        ["credits.spent"],
        ["credits.spent", DEPLETED],
    ]


def test_a_balance_is_low_once_when_it_crosses_below_the_threshold() -> None:
    spends = [SpendChatMessages("ann", n) for n in (10, 5, 1, 4)]  # 20 -> 10, 5, 4, 0

    assert types(5, *spends) == [
        ["user.registered"],
        ["chat_messages.spent"],
        ["chat_messages.spent"],  # 5 is not below 5
        ["chat_messages.spent", LOW],
        ["chat_messages.spent", DEPLETED],  # already below: not low again
    ]
    assert types(None, *spends)[3] == ["chat_messages.spent"]  # no threshold, no low


def test_a_derived_message_names_its_balance_and_threshold() -> None:
    event, before, after = steps(SpendCredits("ann", 8))[-1]
    (low,) = [m for m in messages_of(event, before, after, 5) if m.type == LOW]

    shown = orjson.loads(body(low, event, after, 2))

    assert shown["type"] == LOW and shown["data"]["balance"] == "free_credits"
    assert shown["data"]["threshold"] == 5 and shown["data"]["user"]["free_credits"] == 2
    assert shown["data"]["event"]["type"] == "CreditsSpent"
    assert shown["timestamp"] == shown["data"]["event"]["recorded_at"]


def test_a_message_id_is_the_same_for_the_same_endpoint_event_and_type() -> None:
    spent, depleted = Message("credits.spent"), Message(DEPLETED, Balance.CREDITS)
    assert message_id("ep_1", 7, spent) == message_id("ep_1", 7, spent)
    ids = {
        message_id("ep_1", 7, spent),
        message_id("ep_2", 7, spent),
        message_id("ep_1", 8, spent),
        message_id("ep_1", 7, depleted),
        message_id("ep_1", 7, Message(DEPLETED, Balance.CHAT_MESSAGES)),
    }
    assert len(ids) == 5


def test_an_endpoint_hears_the_types_it_subscribed_to() -> None:
    assert subscribed(["*"], "hold.placed")
    assert subscribed(["hold.placed", LOW], LOW)
    assert not subscribed(["hold.placed"], "hold.settled")


@pytest.mark.parametrize(
    ("tries", "seconds"),
    [(0, 0), (1, 5), (2, 300), (3, 1800), (4, 7200), (5, 18000), (6, 36000), (7, 36000)],
)
def test_the_retry_schedule_with_a_tenth_of_jitter_either_way(tries: int, seconds: int) -> None:
    earliest = schedule.next_delay(tries, jitter=lambda: 0.0)
    middle = schedule.next_delay(tries, jitter=lambda: 0.5)
    latest = schedule.next_delay(tries, jitter=lambda: 1.0)  # [0, 1): never quite

    assert middle == timedelta(seconds=seconds)
    assert earliest == timedelta(seconds=seconds * 0.9)
    assert latest == timedelta(seconds=seconds * 1.1)


def test_after_eight_attempts_a_message_has_failed() -> None:
    assert schedule.next_delay(8) is None


def test_a_signature_verifies_with_each_secret_it_was_made_with() -> None:
    from standardwebhooks import Webhook

    old, new = signing.new_secret(), signing.new_secret()
    now = datetime.now(UTC)
    headers = signing.headers("msg_1", '{"type":"x"}', [new, old], now)

    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify('{"type":"x"}', headers) == {"type": "x"}
    with pytest.raises(Exception, match="signature"):
        Webhook(signing.new_secret()).verify('{"type":"x"}', headers)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.20.0.1", "192.168.0.1", "169.254.169.254", "::1", "fe80::1",
     "fd00::1", "224.0.0.251", "ff02::1", "0.0.0.0", "::ffff:10.0.0.1", "100.64.0.1"],
)  # fmt: skip
def test_addresses_that_are_not_public_are_refused(address: str) -> None:
    with pytest.raises(UnsafeUrl):
        Policy().check_address("h", address)
    Policy(allow_private=True).check_address("h", address)


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::1111", "8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    Policy().check_address("h", address)


def test_only_https_unless_http_is_allowed() -> None:
    with pytest.raises(UnsafeUrl, match="https"):
        Policy().check_url("http://example.com/x")
    assert Policy(allow_http=True).check_url("http://example.com/x") == ("example.com", 80)
    assert Policy().check_url("https://example.com:8443/x") == ("example.com", 8443)
