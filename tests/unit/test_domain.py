"""The rules of a user's stream, without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ledger.commands import (
    ChangePlan,
    Context,
    GrantChatMessages,
    GrantCredits,
    ImportUser,
    RegisterUser,
    SpendChatMessages,
    SpendCredits,
)
from ledger.domain import (
    MAX_BALANCE,
    Balance,
    Cause,
    InvariantViolation,
    User,
    fold,
)
from ledger.errors import (
    BalanceLimit,
    InsufficientBalance,
    InvalidCommand,
    UserExists,
    UserNotFound,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
WHO = Cause("admin", "key_test", "req_1", None)
CAUSE = Context(WHO, NOW)


def registered(user_id: str = "alice") -> User:
    return RegisterUser(user_id).decide(None, CAUSE)


def test_a_new_user_starts_free_with_ten_credits_and_twenty_chat_messages() -> None:
    user = registered()
    assert (user.state.level, user.state.renewal_period) == ("free", None)
    assert (user.state.free_credits, user.state.free_chat_messages) == (10, 20)
    assert user.state.version == 1


def test_spending_takes_from_the_balance_and_refuses_to_overdraw() -> None:
    user = registered()
    SpendCredits("alice", 10).decide(user, CAUSE)
    assert user.state.free_credits == 0
    with pytest.raises(InsufficientBalance):
        SpendCredits("alice", 1).decide(user, CAUSE)
    assert user.state.version == 2  # the refusal recorded nothing


def test_chat_messages_are_a_balance_of_their_own() -> None:
    user = registered()
    SpendChatMessages("alice", 20).decide(user, CAUSE)
    GrantChatMessages("alice", 5, "monthly").decide(user, CAUSE)
    assert (user.state.free_credits, user.state.free_chat_messages) == (10, 5)


@pytest.mark.parametrize("amount", [0, -1, 1_000_001, 10**30, 1.0, 1.5, "5", True, None])
def test_amounts_are_whole_numbers_from_one_to_a_million(amount: object) -> None:
    user = registered()
    with pytest.raises(InvalidCommand):
        user.spend(Balance.CREDITS, amount, None, WHO, NOW)  # type: ignore[arg-type]
    with pytest.raises(InvalidCommand):
        user.grant(Balance.CREDITS, amount, None, WHO, NOW)  # type: ignore[arg-type]
    assert user.state.version == 1


def test_the_largest_amount_is_allowed() -> None:
    user = registered()
    GrantCredits("alice", 1_000_000).decide(user, CAUSE)
    assert user.state.free_credits == 1_000_010


def test_a_grant_past_the_balance_limit_is_refused() -> None:
    user = ImportUser("bob", "free", None, MAX_BALANCE - 5, 0).decide(None, CAUSE)
    GrantCredits("bob", 5).decide(user, CAUSE)
    assert user.state.free_credits == MAX_BALANCE
    with pytest.raises(BalanceLimit):
        GrantCredits("bob", 1).decide(user, CAUSE)


def test_a_reason_is_at_most_200_characters() -> None:
    user = registered()
    SpendCredits("alice", 1, "x" * 200).decide(user, CAUSE)
    with pytest.raises(InvalidCommand):
        SpendCredits("alice", 1, "x" * 201).decide(user, CAUSE)


@pytest.mark.parametrize(
    ("level", "renewal"),
    [
        ("paid", None),
        ("free", "lifetime"),
        ("basic", None),
        ("pro", "monthly"),
        ("paid", "monthly"),
        ("gold", None),
        ("", None),
    ],
)
def test_new_plans_are_free_or_paid_lifetime(level: str, renewal: str | None) -> None:
    user = registered()
    with pytest.raises(InvalidCommand):
        ChangePlan("alice", level, renewal).decide(user, CAUSE)


def test_a_plan_change_sets_level_and_renewal() -> None:
    user = registered()
    ChangePlan("alice", "paid", "lifetime").decide(user, CAUSE)
    assert (user.state.level, user.state.renewal_period) == ("paid", "lifetime")
    ChangePlan("alice", "free", None).decide(user, CAUSE)
    assert (user.state.level, user.state.renewal_period) == ("free", None)


@pytest.mark.parametrize("user_id", ["", "a" * 65, "é", "a b", "x;DROP TABLE users", "a/b"])
def test_user_ids_are_1_to_64_safe_characters(user_id: str) -> None:
    with pytest.raises(InvalidCommand):
        RegisterUser(user_id).decide(None, CAUSE)


def test_registering_twice_and_acting_on_nobody_are_refused() -> None:
    with pytest.raises(UserExists):
        RegisterUser("alice").decide(registered(), CAUSE)
    with pytest.raises(UserNotFound):
        SpendCredits("nobody", 1).decide(None, CAUSE)


def test_an_imported_user_keeps_legacy_values_and_null_balances() -> None:
    user = ImportUser("old", "pro", "monthly", None, None).decide(None, CAUSE)
    assert (user.state.level, user.state.renewal_period) == ("pro", "monthly")
    assert user.state.free_credits is None


def test_a_null_balance_spends_as_zero_and_the_first_grant_sets_it() -> None:
    user = ImportUser("old", "basic", None, None, None).decide(None, CAUSE)
    with pytest.raises(InsufficientBalance):
        SpendCredits("old", 1).decide(user, CAUSE)
    GrantCredits("old", 7).decide(user, CAUSE)
    assert user.state.free_credits == 7
    assert user.state.free_chat_messages is None


def test_replaying_the_events_gives_the_same_state() -> None:
    user = registered()
    SpendCredits("alice", 3).decide(user, CAUSE)
    GrantChatMessages("alice", 4).decide(user, CAUSE)
    ChangePlan("alice", "paid", "lifetime").decide(user, CAUSE)
    events = user.collect_events()
    assert fold(events) == user.state
    assert user.state.credits_spent_total == 3
    assert user.state.chat_messages_granted_total == 4


def test_event_times_never_go_backwards_within_a_stream() -> None:
    user = registered()
    earlier = user.modified_on - timedelta(hours=1)
    SpendCredits("alice", 1).decide(user, Context(WHO, earlier))
    first, second = user.collect_events()
    assert second.timestamp > first.timestamp


def test_the_fold_refuses_events_out_of_order_or_out_of_bounds() -> None:
    user = registered()
    SpendCredits("alice", 4).decide(user, CAUSE)
    SpendCredits("alice", 6).decide(user, CAUSE)
    opening, spend_4, spend_6 = user.collect_events()
    with pytest.raises(InvariantViolation):
        fold([spend_4])  # before the user exists
    with pytest.raises(InvariantViolation):
        fold([opening, spend_6])  # version 3 after version 1
    with pytest.raises(InvariantViolation):
        fold([opening, opening])
    poorer = ImportUser("alice", "free", None, 5, 20).decide(None, CAUSE)
    (poorer_opening,) = poorer.collect_events()
    with pytest.raises(InvariantViolation):
        fold([poorer_opening, spend_6.__class__(**{**vars(spend_6), "originator_version": 2})])


def test_an_old_registration_upcasts_to_the_credit_defaults() -> None:
    state = {
        "timestamp": datetime(2025, 1, 1, tzinfo=UTC),
        "level": "pro",
        "renewal_period": "monthly",
    }
    User.UserRegistered.upcast_v1_v2(state)
    assert state["free_credits"] == 10
    assert state["free_chat_messages"] == 20
    assert state["cause"] is None
