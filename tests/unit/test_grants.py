"""Grants that expire, in priority order, and allowances that reset: without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from ledger import codec
from ledger.commands import (
    CatchUp,
    Context,
    GrantCredits,
    PlaceHold,
    RegisterUser,
    ReleaseHold,
    RemoveAllowance,
    SetAllowance,
    SpendChatMessages,
    SpendCredits,
)
from ledger.domain import Balance, Cause, Period, User, as_of, fold
from ledger.domain import grants as lots
from ledger.domain.allowances import boundary, period_at
from ledger.errors import InsufficientBalance, InvalidCommand, NothingDue

T0 = datetime(2026, 1, 31, 9, 30, tzinfo=UTC)
WHO = Cause("admin", "key_test", "req_1", None)


def at(when: datetime | float) -> Context:
    moment = when if isinstance(when, datetime) else T0 + timedelta(seconds=when)
    return Context(WHO, moment)


def registered() -> User:
    return RegisterUser("ann").decide(None, at(0))


def grant(user: User, amount: int, t: float = 1, **options: object) -> str:
    GrantCredits("ann", amount, "promo", **options).decide(user, at(t))  # type: ignore[arg-type]
    granted: str = user.pending_events[-1].grant_id  # type: ignore[attr-defined]
    return granted


def test_spends_take_the_lowest_priority_then_the_soonest_expiry_then_the_oldest() -> None:
    user = registered()  # 10, priority 50, no expiry, oldest
    late = grant(user, 5, expires_at=T0 + timedelta(days=30))
    soon = grant(user, 5, t=2, expires_at=T0 + timedelta(days=3))
    first = grant(user, 5, t=3, priority=10)

    SpendCredits("ann", 12).decide(user, at(4))

    (*_, spend) = user.collect_events()
    drawn = [(p["grant_id"], p["amount"]) for p in spend.data["grants"]]
    assert drawn == [(first, 5), (soon, 5), (late, 2)]
    assert user.state.free_credits == 13


def test_from_its_expiry_on_a_grants_remainder_is_not_available() -> None:
    late, early = registered(), registered()
    for user in (late, early):
        grant(user, 100, expires_at=T0 + timedelta(hours=1))
    with pytest.raises(InsufficientBalance) as refused:
        SpendCredits("ann", 11).decide(late, at(3600))
    assert refused.value.facts is not None and refused.value.facts["available"] == 10
    SpendCredits("ann", 100).decide(early, at(3599.999999))


def test_an_expiry_is_recorded_once_with_its_exact_instant() -> None:
    user = registered()
    grant_id = grant(user, 100, expires_at=T0 + timedelta(hours=1))
    CatchUp("ann").decide(user, at(7200))
    (*_, expired) = user.collect_events()
    assert type(expired).__name__ == "CreditsExpired"
    assert expired.data == {
        "grant_id": grant_id,
        "amount": 100,
        "expired_at": T0 + timedelta(hours=1),
    }
    assert user.state.credits_expired_total == 100
    with pytest.raises(NothingDue):
        CatchUp("ann").decide(user, at(7201))


def test_what_comes_back_to_a_grant_past_its_expiry_expires_at_once() -> None:
    user = registered()
    grant(user, 5, priority=0, expires_at=T0 + timedelta(minutes=1))
    PlaceHold("ann", Balance.CREDITS, 5, "hold_a", None, 3600).decide(user, at(2))
    ReleaseHold("ann", "hold_a").decide(user, at(120))  # after the grant's expiry
    assert (user.state.free_credits, user.state.free_credits_held) == (10, 0)
    assert user.state.credits_expired_total == 5


def test_the_next_expiry_is_what_expires_soonest_and_how_much() -> None:
    user = registered()
    grant(user, 5, expires_at=T0 + timedelta(days=2))
    grant(user, 7, t=2, expires_at=T0 + timedelta(days=1))
    grant(user, 1, t=3, expires_at=T0 + timedelta(days=1))
    assert user.state.free_credits_next_expiry_at == T0 + timedelta(days=1)
    assert user.state.free_credits_next_expiry_amount == 8
    assert user.state.free_chat_messages_next_expiry_at is None


@pytest.mark.parametrize(
    "expires_at", [T0 - timedelta(seconds=1), T0 + timedelta(seconds=1), T0 + timedelta(days=36600)]
)
def test_a_grant_expires_in_the_future_and_within_a_hundred_years(expires_at: datetime) -> None:
    user = registered()
    with pytest.raises(InvalidCommand):
        grant(user, 5, t=1, expires_at=expires_at)


@pytest.mark.parametrize("priority", [-1, 101, True])
def test_a_priority_is_0_to_100(priority: object) -> None:
    user = registered()
    with pytest.raises(InvalidCommand):
        grant(user, 5, priority=priority)


# -- allowances ----------------------------------------------------------------------


def test_months_are_calendar_months_with_the_anchors_day_clamped_to_the_months_end() -> None:
    anchor = datetime(2027, 1, 31, 0, 0, tzinfo=UTC)
    days = [boundary(anchor, Period.MONTH, k).date().isoformat() for k in range(4)]
    assert days == ["2027-01-31", "2027-02-28", "2027-03-31", "2027-04-30"]
    leap = datetime(2028, 1, 31, tzinfo=UTC)
    assert boundary(leap, Period.MONTH, 1).date().isoformat() == "2028-02-29"


def test_the_period_at_a_moment_holds_it() -> None:
    anchor = datetime(2028, 1, 31, 8, 0, tzinfo=UTC)
    start, end = period_at(anchor, Period.MONTH, datetime(2028, 3, 15, tzinfo=UTC))
    assert (start, end) == (
        datetime(2028, 2, 29, 8, tzinfo=UTC),
        datetime(2028, 3, 31, 8, tzinfo=UTC),
    )
    start, end = period_at(anchor, Period.DAY, datetime(2028, 2, 1, 7, 59, tzinfo=UTC))
    assert (start, end) == (
        datetime(2028, 1, 31, 8, tzinfo=UTC),
        datetime(2028, 2, 1, 8, tzinfo=UTC),
    )
    start, end = period_at(anchor, Period.WEEK, anchor)
    assert (start, end) == (anchor, anchor + timedelta(weeks=1))


def test_an_allowance_resets_the_balance_each_period_and_unused_amounts_lapse() -> None:
    user = registered()
    SetAllowance("ann", Balance.CHAT_MESSAGES, 5, "day").decide(user, at(1))
    assert user.state.free_chat_messages == 25  # the 20 registered, and today's 5
    SpendChatMessages("ann", 2).decide(user, at(2))  # the allowance first: it expires soonest
    assert user.state.free_chat_messages == 23

    tomorrow = T0 + timedelta(days=1, seconds=1)
    CatchUp("ann").decide(user, at(tomorrow))

    assert user.state.free_chat_messages == 20 + 5  # reset to 5: the 3 left lapse
    kinds = [type(e).__name__ for e in user.collect_events()][-2:]
    assert kinds == ["ChatMessagesExpired", "AllowanceGranted"]


def test_one_grant_per_period_however_often_time_is_caught_up() -> None:
    user = registered()
    SetAllowance("ann", Balance.CREDITS, 5, "week").decide(user, at(1))
    later = T0 + timedelta(days=9)
    CatchUp("ann").decide(user, at(later))
    for moment in (later, later + timedelta(hours=1)):
        with pytest.raises(NothingDue):
            CatchUp("ann").decide(user, at(moment))
    granted = [e for e in user.collect_events() if type(e).__name__ == "AllowanceGranted"]
    assert len(granted) == 2


def test_periods_missed_without_traffic_are_not_granted_after_the_fact() -> None:
    user = registered()
    SetAllowance("ann", Balance.CREDITS, 5, "day").decide(user, at(1))
    CatchUp("ann").decide(user, at(T0 + timedelta(days=10, hours=1)))
    granted = [e for e in user.collect_events() if type(e).__name__ == "AllowanceGranted"]
    assert len(granted) == 2  # the first day's, and the current day's
    assert user.state.free_credits == 10 + 5


def test_an_allowance_set_again_starts_over_and_one_removed_stops() -> None:
    user = registered()
    SetAllowance("ann", Balance.CREDITS, 5, "month").decide(user, at(1))
    SetAllowance("ann", Balance.CREDITS, 8, "month").decide(user, at(2))
    assert user.state.free_credits == 10 + 8
    RemoveAllowance("ann", Balance.CREDITS).decide(user, at(3))
    assert user.state.allowance(Balance.CREDITS) is None
    assert as_of(user.state, T0 + timedelta(days=40)).free_credits == 10  # it ran out
    with pytest.raises(InvalidCommand):
        RemoveAllowance("ann", Balance.CREDITS).decide(user, at(4))


def test_an_allowance_anchored_ahead_starts_at_its_anchor() -> None:
    user = registered()
    anchor = T0 + timedelta(days=2)
    SetAllowance("ann", Balance.CREDITS, 5, "day", anchor).decide(user, at(1))
    assert user.state.free_credits == 10
    assert user.state.next_due_at == anchor
    assert as_of(user.state, anchor).free_credits == 15


def test_grants_and_allowances_replay_to_the_same_state() -> None:
    user = registered()
    grant(user, 5, expires_at=T0 + timedelta(hours=1))
    SetAllowance("ann", Balance.CHAT_MESSAGES, 3, "day").decide(user, at(2))
    SpendCredits("ann", 12).decide(user, at(3))
    CatchUp("ann").decide(user, at(T0 + timedelta(days=3)))
    assert fold(user.collect_events()) == user.state


def test_a_state_keeps_its_grants_in_the_consumption_order_however_it_was_kept() -> None:
    user = registered()
    grant(user, 5, expires_at=T0 + timedelta(days=30))
    grant(user, 5, t=2, expires_at=T0 + timedelta(days=3))
    grant(user, 5, t=3, priority=10)
    state = user.state
    assert list(state.grants) == sorted(state.grants, key=lots.order)
    # A snapshot, or a row, of an earlier release lists them as they were granted.
    kept = codec.to_dict(state)
    kept["grants"] = sorted(kept["grants"], key=lambda g: (g["granted_at"], g["id"]))
    assert [g["id"] for g in kept["grants"]] != [g.id for g in state.grants]
    assert codec.from_dict(orjson.loads(orjson.dumps(kept))) == state
