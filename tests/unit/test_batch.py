"""One batch's decisions, without a database: arrival order, refusals that
refuse only themselves, and idempotency keys met again."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import cast

from ledger.commands import (
    Command,
    Context,
    GrantCredits,
    PlaceHold,
    RegisterUser,
    SettleHold,
    SpendCredits,
)
from ledger.domain import Balance, Cause, User, UserEvent, fold
from ledger.errors import (
    HistoryUnreadable,
    HoldHasExpired,
    IdempotencyKeyReused,
    InsufficientBalance,
    UserNotFound,
)
from ledger.idempotency import IdempotencyKey, StoredOutcome
from ledger.writer.batch import Accepted, Decisions, Pending
from projections.views import present

CAUSE = Cause("service", "key_test", "req_1", None)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def decide(
    commands: Sequence[Command | tuple[Command, IdempotencyKey]],
    users: dict[str, User | None] | None = None,
    *,
    stored: dict[IdempotencyKey, StoredOutcome] | None = None,
    unreadable: dict[str, HistoryUnreadable] | None = None,
) -> tuple[Decisions, list[object]]:
    """Decide `commands` as one batch; the decisions, and each command's result
    once the new events are given positions 1, 2, ..."""

    async def run() -> tuple[Decisions, list[object]]:
        batch = [
            Pending(c, CAUSE, None) if isinstance(c, Command) else Pending(c[0], CAUSE, c[1])
            for c in commands
        ]
        everyone = {c.user_id: None for c in (p.command for p in batch)}
        everyone.update(users or {})
        decisions = Decisions(batch, everyone, unreadable or {}, stored or {}, NOW)
        positions = list(range(1, len(decisions.new_events) + 1))
        return decisions, list(decisions.accept(positions, present))

    return asyncio.run(run())


def test_commands_are_decided_in_arrival_order_on_the_state_the_ones_before_left() -> None:
    decisions, results = decide(
        [
            RegisterUser("ann"),
            SpendCredits("ann", 10),
            SpendCredits("ann", 1),
            GrantCredits("ann", 5),
        ]
    )

    assert [type(r).__name__ for r in results] == [
        "Accepted",
        "Accepted",
        "InsufficientBalance",
        "Accepted",
    ]
    assert [n.event.originator_version for n in decisions.new_events] == [1, 2, 3]
    last = results[-1]
    assert isinstance(last, Accepted) and last.user["free_credits"] == 5


def test_a_refusal_refuses_only_its_command_and_records_nothing() -> None:
    decisions, results = decide([SpendCredits("nobody", 1), RegisterUser("bob")])

    assert isinstance(results[0], UserNotFound)
    assert isinstance(results[1], Accepted)
    assert [n.event.originator_id for n in decisions.new_events] == ["bob"]


def test_a_key_first_seen_is_remembered_with_its_answer_refusals_included() -> None:
    key, refused_key = IdempotencyKey("key_a", "k1"), IdempotencyKey("key_a", "k2")
    decisions, results = decide([(RegisterUser("cy"), key), (SpendCredits("cy", 99), refused_key)])

    outcomes = {k: outcome for k, _, outcome in decisions.records}
    first = results[0]
    assert isinstance(first, Accepted)
    assert outcomes[key] == first.as_outcome()
    assert outcomes[refused_key]["refused"]["code"] == "insufficient-balance"


def test_a_key_met_again_replays_its_first_answer_and_decides_nothing() -> None:
    key = IdempotencyKey("key_a", "k1")
    command = SpendCredits("dee", 1)
    first = {"accepted": {"event": {"position": 7}, "user": {"free_credits": 9}}}
    stored = {key: StoredOutcome(command.fingerprint(), first)}

    decisions, results = decide([(command, key)], stored=stored)

    assert results == [Accepted(first["accepted"], replayed=True)]
    assert decisions.new_events == [] and decisions.records == []


def test_a_key_met_again_with_another_request_is_refused() -> None:
    key = IdempotencyKey("key_a", "k1")
    stored = {key: StoredOutcome(SpendCredits("dee", 1).fingerprint(), {"accepted": {}})}

    decisions, results = decide([(SpendCredits("dee", 2), key)], stored=stored)

    assert isinstance(results[0], IdempotencyKeyReused)
    assert decisions.new_events == []


def test_a_replayed_refusal_is_the_same_refusal() -> None:
    key = IdempotencyKey("key_a", "k1")
    command = SpendCredits("eve", 50)
    refused = {"refused": {"code": "insufficient-balance", "detail": "free_credits is 10"}}
    stored = {key: StoredOutcome(command.fingerprint(), refused)}

    _, results = decide([(command, key)], stored=stored)

    (result,) = results
    assert isinstance(result, InsufficientBalance)
    assert result.replayed and result.detail == "free_credits is 10"


def test_a_user_whose_history_cannot_be_read_refuses_only_their_commands() -> None:
    unreadable = {"fay": HistoryUnreadable("'fay''s event 3 cannot be read")}

    decisions, results = decide(
        [SpendCredits("fay", 1), RegisterUser("gus")], unreadable=unreadable
    )

    assert isinstance(results[0], HistoryUnreadable)
    assert isinstance(results[1], Accepted)
    assert len(decisions.new_events) == 1


def test_a_refused_command_records_nothing_not_even_what_time_brought_before_it() -> None:
    async def run() -> tuple[Decisions, User]:
        user = RegisterUser("ivy").decide(None, Context(CAUSE, NOW))
        PlaceHold("ivy", Balance.CREDITS, 5, "hold_a", None, 10).decide(user, Context(CAUSE, NOW))
        user.collect_events()
        later = NOW + timedelta(seconds=60)  # the hold has expired
        batch = [Pending(SettleHold("ivy", "hold_a", 1), CAUSE, None)]
        users: dict[str, User | None] = {"ivy": user}
        decisions = Decisions(batch, users, {}, {}, later)
        return decisions, users["ivy"]  # type: ignore[return-value]

    decisions, user = asyncio.run(run())

    assert isinstance(decisions.results[0], HoldHasExpired)
    assert decisions.new_events == []
    assert user.state.version == 2 and user.state.free_credits_held == 5


def test_what_time_brought_is_recorded_before_the_commands_own_event() -> None:
    async def run() -> Decisions:
        user = RegisterUser("joe").decide(None, Context(CAUSE, NOW))
        PlaceHold("joe", Balance.CREDITS, 9, "hold_a", None, 10).decide(user, Context(CAUSE, NOW))
        user.collect_events()
        later = NOW + timedelta(seconds=60)
        batch = [Pending(SpendCredits("joe", 5), CAUSE, None)]
        decisions = Decisions(batch, {"joe": user}, {}, {}, later)
        decisions.accept([3, 4], present)
        return decisions

    decisions = asyncio.run(run())

    assert [(n.index, type(n.event).__name__) for n in decisions.new_events] == [
        (None, "HoldExpired"),
        (0, "CreditsSpent"),
    ]
    accepted = decisions.results[0]
    assert isinstance(accepted, Accepted) and accepted.event["position"] == 4
    assert accepted.user["free_credits"] == 5


def test_each_new_event_leaves_its_user_as_a_replay_of_the_stream_does() -> None:
    async def run() -> tuple[list[UserEvent], Decisions]:
        user = RegisterUser("kim").decide(None, Context(CAUSE, NOW))
        soon = NOW + timedelta(seconds=30)
        GrantCredits("kim", 5, "promo", expires_at=soon).decide(user, Context(CAUSE, NOW))
        PlaceHold("kim", Balance.CREDITS, 9, "hold_a", None, 10).decide(user, Context(CAUSE, NOW))
        history = cast(list[UserEvent], user.collect_events())
        later = NOW + timedelta(seconds=60)  # the hold, then the grant, have expired
        batch = [Pending(SpendCredits("kim", 2), CAUSE, None)]
        return history, Decisions(batch, {"kim": user}, {}, {}, later)

    history, decisions = asyncio.run(run())

    assert [type(n.event).__name__ for n in decisions.new_events] == [
        "HoldExpired",
        "CreditsExpired",
        "CreditsSpent",
    ]
    for new in decisions.new_events:
        history.append(new.event)
        assert new.state == fold(history)
    assert decisions.new_events[-1].state.free_credits == 8
