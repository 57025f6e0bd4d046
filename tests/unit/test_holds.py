"""Holds, without a database: reserve, settle what it cost, release, expire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ledger.commands import (
    Context,
    GrantCredits,
    PlaceHold,
    RegisterUser,
    ReleaseHold,
    SettleHold,
    SpendCredits,
)
from ledger.domain import Balance, Cause, Hold, User, as_of, fold
from ledger.errors import (
    HoldClosed,
    HoldHasExpired,
    HoldNotFound,
    InsufficientBalance,
    InvalidCommand,
    SettleExceedsHold,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WHO = Cause("service", "key_test", "req_1", None)


def at(seconds: float) -> Context:
    return Context(WHO, T0 + timedelta(seconds=seconds))


def registered() -> User:
    return RegisterUser("ann").decide(None, at(0))


def place(user: User, amount: int, *, hold_id: str = "hold_a", ttl: int = 60, t: float = 1) -> None:
    PlaceHold("ann", Balance.CREDITS, amount, hold_id, "reply", ttl).decide(user, at(t))


def test_a_hold_moves_the_amount_from_available_to_held() -> None:
    user = registered()
    place(user, 4)
    assert (user.state.free_credits, user.state.free_credits_held) == (6, 4)
    (hold,) = user.state.open_holds()
    assert (hold.amount, hold.status, hold.expires_at) == (4, "open", T0 + timedelta(seconds=61))


def test_more_than_available_cannot_be_held_and_nothing_is_recorded() -> None:
    user = registered()
    place(user, 8)
    with pytest.raises(InsufficientBalance) as refused:
        place(user, 3, hold_id="hold_b")
    assert refused.value.facts is not None
    assert refused.value.facts["available"] == 2
    assert refused.value.facts["held"] == 8
    assert refused.value.facts["shortfall"] == 1
    assert user.state.version == 2


def test_settling_spends_what_it_cost_and_gives_back_the_rest() -> None:
    user = registered()
    place(user, 5)
    SettleHold("ann", "hold_a", 3, "reply").decide(user, at(2))
    assert (user.state.free_credits, user.state.free_credits_held) == (7, 0)
    assert user.state.credits_spent_total == 3
    hold = user.state.hold("hold_a")
    assert hold is not None and (hold.status, hold.settled_amount) == ("settled", 3)


def test_settling_nothing_and_settling_all_are_both_allowed() -> None:
    user = registered()
    place(user, 5)
    SettleHold("ann", "hold_a", 0).decide(user, at(2))
    assert user.state.free_credits == 10
    place(user, 5, hold_id="hold_b", t=3)
    SettleHold("ann", "hold_b", 5).decide(user, at(4))
    assert user.state.free_credits == 5


def test_releasing_gives_it_all_back() -> None:
    user = registered()
    place(user, 5)
    ReleaseHold("ann", "hold_a").decide(user, at(2))
    assert (user.state.free_credits, user.state.free_credits_held) == (10, 0)


def test_a_hold_resolves_once_and_says_how_it_closed() -> None:
    user = registered()
    place(user, 5)
    SettleHold("ann", "hold_a", 2).decide(user, at(2))
    with pytest.raises(HoldClosed, match="settled for 2"):
        SettleHold("ann", "hold_a", 1).decide(user, at(3))
    with pytest.raises(HoldClosed, match="settled"):
        ReleaseHold("ann", "hold_a").decide(user, at(3))
    place(user, 1, hold_id="hold_b", t=4)
    ReleaseHold("ann", "hold_b").decide(user, at(5))
    with pytest.raises(HoldClosed, match="released"):
        ReleaseHold("ann", "hold_b").decide(user, at(6))


def test_a_hold_closed_before_the_users_last_event_is_known_as_recorded() -> None:
    user = registered()
    place(user, 5)
    ReleaseHold("ann", "hold_a").decide(user, at(2))
    SpendCredits("ann", 1).decide(user, at(3))  # the closed hold has left the state
    assert user.state.hold("hold_a") is None
    recorded = Hold("hold_a", Balance.CREDITS, 5, None, T0, T0, (), "released", None, T0)
    context = Context(WHO, T0 + timedelta(seconds=4), lambda u, h: recorded)
    with pytest.raises(HoldClosed, match="released"):
        SettleHold("ann", "hold_a", 1).decide(user, context)
    with pytest.raises(HoldNotFound):
        SettleHold("ann", "hold_zz", 1).decide(user, at(4))


def test_a_settle_above_the_held_amount_is_refused() -> None:
    user = registered()
    place(user, 5)
    with pytest.raises(SettleExceedsHold):
        SettleHold("ann", "hold_a", 6).decide(user, at(2))
    assert user.state.version == 2


def test_from_its_expiry_on_a_hold_counts_as_released_for_every_decision() -> None:
    user = registered()
    place(user, 9, ttl=10)  # expires at 11 s
    with pytest.raises(InsufficientBalance):
        SpendCredits("ann", 2).decide(user, at(10.999999))
    SpendCredits("ann", 2).decide(user, at(11))  # records the expiry first
    assert user.state.free_credits == 8
    events = user.collect_events()
    assert [type(e).__name__ for e in events][-2:] == ["HoldExpired", "CreditsSpent"]
    assert events[-2].expired_at == T0 + timedelta(seconds=11)  # type: ignore[attr-defined]


def test_a_settle_at_the_expiry_instant_is_hold_expired() -> None:
    user = registered()
    place(user, 5, ttl=10)
    with pytest.raises(HoldHasExpired, match="expired at 2026-03-01T12:00:11"):
        SettleHold("ann", "hold_a", 1).decide(user, at(11))


def test_a_read_at_a_moment_sees_the_expiry_without_recording_it() -> None:
    user = registered()
    place(user, 5, ttl=10)
    later = as_of(user.state, T0 + timedelta(seconds=30))
    assert (later.free_credits, later.free_credits_held) == (10, 0)
    assert later.version == user.state.version
    assert user.state.free_credits_held == 5


def test_the_hold_records_which_grants_it_drew_from_and_gives_back_to_them() -> None:
    user = registered()
    GrantCredits("ann", 5, "promo", priority=10).decide(user, at(1))
    place(user, 7, t=2)  # 5 from the promotion (priority 10), 2 from the registration
    promo = next(g for g in user.state.grants if g.reason == "promo")
    hold = user.state.hold("hold_a")
    assert hold is not None and dict(hold.grants)[promo.id] == 5
    SettleHold("ann", "hold_a", 6).decide(user, at(3))
    promo = next(g for g in user.state.grants if g.reason == "promo")
    assert (promo.spent, promo.remaining) == (5, 0)  # spent first, in the same order
    assert user.state.free_credits == 9


def test_a_placed_hold_replays_to_the_same_state() -> None:
    user = registered()
    place(user, 5)
    SettleHold("ann", "hold_a", 2).decide(user, at(2))
    place(user, 3, hold_id="hold_b", t=3)
    ReleaseHold("ann", "hold_b").decide(user, at(4))
    assert fold(user.collect_events()) == user.state


@pytest.mark.parametrize("ttl", [0, -1, 86_401, 10**9])
def test_a_ttl_is_one_second_to_a_day(ttl: int) -> None:
    user = registered()
    with pytest.raises(InvalidCommand):
        place(user, 1, ttl=ttl)
