"""Holds, grants with priorities and expiries, spends and time passing, in any
order, through the real writer on PostgreSQL (a hypothesis state machine):
no balance or held amount is ever negative; every grant's amount is always
accounted for (remaining + held + spent + expired); what is available is the
remainder of the grants not expired, the held amount that of the open holds;
the consumption order always holds; and at the end the projection equals a
replay, the expiry worker having recorded what time brought."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ledger.application import Ledger
from ledger.commands import (
    CatchUp,
    GrantCredits,
    PlaceHold,
    RegisterUser,
    ReleaseHold,
    SettleHold,
    SpendCredits,
)
from ledger.db import Database
from ledger.domain import Balance, Cause, UserState, as_of
from ledger.domain import grants as lots
from ledger.errors import LedgerError
from projections.history import state_at
from projections.log import EventLog
from tests.helpers import BackgroundWriter, MovableClock, audit, project_once

CAUSE = Cause("service", "key_prop", None, None)


class Ledgers(RuleBasedStateMachine):
    """One user's credits, driven at random."""

    # Set per test run by the fixture below.
    database: Database
    ledger: Ledger
    log: EventLog

    def __init__(self) -> None:
        super().__init__()
        self.clock = MovableClock(frozen=True)  # time moves only when a rule says so
        self.writer = BackgroundWriter(self.ledger, self.database, clock=self.clock)
        self.user_id = "p_" + uuid.uuid4().hex[:12]
        self.holds: list[str] = []
        self.last_draw: list[tuple[str, int]] | None = None

    def teardown(self) -> None:
        try:
            self.writer.execute_together([(CatchUp(self.user_id), CAUSE)])
        finally:
            self.writer.stop()
        project_once(self.database, self.ledger)
        result = audit(self.database, self.ledger, self.user_id)
        assert result is not None and result.consistent, result

    def run(self, command: Any) -> bool:
        try:
            accepted = self.writer.execute(command, CAUSE)
        except LedgerError:
            return False
        event = accepted.event
        if event["type"] in ("CreditsSpent", "HoldPlaced"):
            self.last_draw = [(p["grant_id"], p["amount"]) for p in event["data"]["grants"]]
        # Right after a command, nothing past its expiry remains: what time
        # brought was recorded first, and what came back to an expired grant
        # expired with it.
        for grant in self.state().grants:
            if grant.expires_at is not None and grant.expires_at <= self.clock():
                assert grant.remaining == 0, grant
        return True

    def state(self) -> UserState:
        found = state_at(self.log, self.user_id)
        assert found is not None
        return found.state

    # -- the rules ------------------------------------------------------------------

    @initialize()
    def register(self) -> None:
        assert self.run(RegisterUser(self.user_id))

    @rule(
        amount=st.integers(1, 30),
        priority=st.sampled_from([0, 50, 100]),
        expires_in=st.sampled_from([None, None, 5, 60, 600, 3600]),
    )
    def grant(self, amount: int, priority: int, expires_in: int | None) -> None:
        expires_at = None if expires_in is None else self.clock() + timedelta(seconds=expires_in)
        self.run(GrantCredits(self.user_id, amount, "p", priority, expires_at))

    @rule(amount=st.integers(1, 40))
    def spend(self, amount: int) -> None:
        before = as_of(self.state(), self.clock())
        if self.run(SpendCredits(self.user_id, amount)):
            self.check_order(before, amount)

    @rule(amount=st.integers(1, 40), ttl=st.sampled_from([5, 60, 600, 3600]))
    def place(self, amount: int, ttl: int) -> None:
        hold_id = "hold_" + uuid.uuid4().hex[:24]
        before = as_of(self.state(), self.clock())
        if self.run(PlaceHold(self.user_id, Balance.CREDITS, amount, hold_id, None, ttl)):
            self.holds.append(hold_id)
            self.check_order(before, amount)

    @precondition(lambda self: self.holds)
    @rule(data=st.data(), amount=st.integers(0, 45))
    def settle(self, data: st.DataObject, amount: int) -> None:
        self.run(SettleHold(self.user_id, data.draw(st.sampled_from(self.holds)), amount))

    @precondition(lambda self: self.holds)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self.run(ReleaseHold(self.user_id, data.draw(st.sampled_from(self.holds))))

    @rule(seconds=st.sampled_from([1, 30, 300, 1800]))
    def time_passes(self, seconds: int) -> None:
        self.clock.advance(seconds)

    # -- what must always hold ---------------------------------------------------------

    def check_order(self, before: UserState, amount: int) -> None:
        """The grants drawn are the first ones in the consumption order, as the
        contract words it: priority ascending, then soonest expiry (none last),
        then oldest."""
        now = self.clock()
        usable = [
            g
            for g in before.grants
            if g.balance is Balance.CREDITS
            and g.remaining
            and (g.expires_at is None or g.expires_at > now)
        ]
        usable.sort(
            key=lambda g: (
                g.priority,
                g.expires_at or datetime.max.replace(tzinfo=UTC),
                g.granted_at,
            )
        )
        expected, left = [], amount
        for grant in usable:
            if left:
                expected.append((grant.id, min(left, grant.remaining)))
                left -= min(left, grant.remaining)
        assert self.last_draw == expected

    @invariant()
    def balances_add_up(self) -> None:
        state = self.state()
        now = self.clock()
        assert list(state.grants) == sorted(state.grants, key=lots.order)  # as draws take them
        assert state.expiring == lots.summed(state.grants)[2]  # kept by the fold, never stale
        for grant in state.grants:
            assert min(grant.remaining, grant.held, grant.spent, grant.expired) >= 0
            assert grant.remaining + grant.held + grant.spent + grant.expired == grant.amount
        credits = [g for g in state.grants if g.balance is Balance.CREDITS]
        assert state.free_credits == sum(g.remaining for g in credits)
        assert state.free_credits_held == sum(h.amount for h in state.open_holds(Balance.CREDITS))
        assert state.free_credits_held == sum(g.held for g in credits)
        current = as_of(state, now)  # time's effects, recorded or not
        assert current.free_credits == lots.available(current.grants, Balance.CREDITS, now)
        assert (current.free_credits or 0) >= 0 and current.free_credits_held >= 0


def test_holds_grants_spends_and_time_in_any_order(
    database: Database, ledger: Ledger, log: EventLog
) -> None:
    Ledgers.database, Ledgers.ledger, Ledgers.log = database, ledger, log
    Ledgers.TestCase.settings = settings(
        max_examples=20,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    Ledgers.TestCase().runTest()
