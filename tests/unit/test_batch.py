"""One batch's decisions, without a database: arrival order, refusals that
refuse only themselves, and idempotency keys met again."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ledger.commands import Command, GrantCredits, RegisterUser, SpendCredits
from ledger.domain import Cause, User
from ledger.errors import (
    HistoryUnreadable,
    IdempotencyKeyReused,
    InsufficientBalance,
    UserNotFound,
)
from ledger.idempotency import IdempotencyKey, StoredOutcome
from ledger.writer.batch import Accepted, Decisions, Pending
from projections.views import present

CAUSE = Cause("service", "key_test", "req_1", None)


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
        decisions = Decisions(batch, everyone, unreadable or {}, stored or {})
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

    assert results == [Accepted({"position": 7}, {"free_credits": 9}, replayed=True)]
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
