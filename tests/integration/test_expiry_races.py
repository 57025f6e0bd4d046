"""Commands racing time at its instants, on real PostgreSQL with the real
expiry worker: a settle sent as its hold expires is a settle or a
`hold-expired`, never both; a spend at an allowance's boundary sees the reset
first; a hold is closed exactly once."""

from __future__ import annotations

from concurrent.futures import Future
from datetime import timedelta

from ledger.application import Ledger
from ledger.commands import (
    GrantChatMessages,
    PlaceHold,
    RegisterUser,
    SetAllowance,
    SettleHold,
    SpendChatMessages,
)
from ledger.db import Database
from ledger.domain import Balance, Cause
from ledger.errors import HoldHasExpired, LedgerError
from projections.expiry import ExpiryWorker
from projections.log import EventLog
from tests.helpers import BackgroundWriter, MovableClock, project_once, rows, wait_until

CAUSE = Cause("service", "key_race", None, None)
HOLDS = 40


def closings(database: Database) -> dict[str, list[str]]:
    closed: dict[str, list[str]] = {}
    for hold_id, topic in rows(
        database,
        "SELECT convert_from(state, 'UTF8')::jsonb ->> 'hold_id', topic FROM ledger_events "
        "WHERE topic ~ 'Hold(Settled|Released|Expired)$'",
    ):
        closed.setdefault(hold_id, []).append(topic.rpartition(".")[2])
    return closed


def test_a_settle_racing_its_holds_expiry_is_one_or_the_other_never_both(
    database: Database, ledger: Ledger
) -> None:
    clock = MovableClock(frozen=True)
    writer = BackgroundWriter(ledger, database, clock=clock)
    try:
        writer.execute_together([(RegisterUser(f"race{i}"), CAUSE) for i in range(HOLDS)])
        writer.execute_together(
            [
                (PlaceHold(f"race{i}", Balance.CREDITS, 2, f"hold_race{i}", None, 1), CAUSE)
                for i in range(HOLDS)
            ]
        )
        project_once(database, ledger)
        worker = ExpiryWorker(database, ledger, clock=clock, poll_interval=0.01)
        worker.start()
        try:
            # Settles sent one after another across the instant each hold expires.
            outcomes: dict[str, str] = {}

            def settle_all(holds: range) -> None:
                answers: list[tuple[int, Future[object]]] = []
                for i in holds:
                    settle = SettleHold(f"race{i}", f"hold_race{i}", 1)
                    answers.append((i, writer.submit(settle, CAUSE)))  # type: ignore[arg-type]
                for i, future in answers:
                    try:
                        future.result(30)
                        outcomes[f"hold_race{i}"] = "HoldSettled"
                    except HoldHasExpired:
                        outcomes[f"hold_race{i}"] = "HoldExpired"

            settle_all(range(HOLDS // 2))  # just before the instant
            # The rest arrive at the instant of expiry (the placement was
            # recorded a microsecond after the registration, in this frozen
            # time, and held for 1 s), racing the worker, which meets it too.
            clock.advance(1.000001)
            settle_all(range(HOLDS // 2, HOLDS))
            clock.advance(5)
            wait_until(lambda: len(closings(database)) == HOLDS, timeout=30)
        finally:
            worker.stop()
    finally:
        writer.stop()

    closed = closings(database)
    assert all(len(kinds) == 1 for kinds in closed.values()), closed
    assert {h: kinds[0] for h, kinds in closed.items()} == outcomes
    assert "HoldExpired" in outcomes.values()  # the race was run across the instant
    assert "HoldSettled" in outcomes.values()


def test_a_spend_at_an_allowances_boundary_sees_the_reset_first(
    database: Database, ledger: Ledger, log: EventLog
) -> None:
    clock = MovableClock(frozen=True)
    writer = BackgroundWriter(ledger, database, clock=clock)
    worker = ExpiryWorker(database, ledger, clock=clock, poll_interval=0.01)
    try:
        writer.execute(RegisterUser("month"), CAUSE)
        writer.execute(SpendChatMessages("month", 20), CAUSE)  # the registration's 20
        writer.execute(SetAllowance("month", Balance.CHAT_MESSAGES, 3, "day"), CAUSE)
        writer.execute(SpendChatMessages("month", 3), CAUSE)
        project_once(database, ledger)
        worker.start()
        clock.advance(timedelta(days=1).total_seconds())  # at the boundary, exactly
        # The worker and the spends race for the new period; either way the
        # spend sees the reset, and the period is granted once.
        spends = [writer.submit(SpendChatMessages("month", 1), CAUSE) for _ in range(5)]
        results: list[object] = []
        for future in spends:
            try:
                results.append(future.result(30))
            except LedgerError as refusal:
                results.append(refusal)
        project_once(database, ledger)
    finally:
        worker.stop()
        writer.stop()

    assert all(not isinstance(r, Exception) for r in results[:3]), results
    assert all(isinstance(r, LedgerError) for r in results[3:]), results
    kinds = [type(r.event).__name__ for r in log.user_events("month")]
    assert kinds.count("AllowanceGranted") == 2  # the first day's, and this one's
    assert kinds.index("AllowanceGranted", kinds.index("AllowanceGranted") + 1) < len(kinds) - 3


def test_a_grant_to_an_exhausted_user_does_not_disturb_the_allowance(
    database: Database, ledger: Ledger
) -> None:
    writer = BackgroundWriter(ledger, database)
    try:
        writer.execute(RegisterUser("quiet"), CAUSE)
        writer.execute(SetAllowance("quiet", Balance.CHAT_MESSAGES, 5, "week"), CAUSE)
        granted = writer.execute(GrantChatMessages("quiet", 2), CAUSE)
    finally:
        writer.stop()
    assert granted.user["free_chat_messages"] == 20 + 5 + 2
