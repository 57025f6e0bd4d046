"""The command writer on real PostgreSQL: group commit, concurrency, idempotency."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import orjson
import pytest
from eventsourcing.persistence import StoredEvent

from ledger.application import Ledger
from ledger.commands import (
    GrantCredits,
    PlaceHold,
    RegisterUser,
    SettleHold,
    SpendChatMessages,
    SpendCredits,
)
from ledger.db import Database
from ledger.domain import Balance, Cause
from ledger.errors import (
    DatabaseUnavailable,
    HistoryUnreadable,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InsufficientBalance,
    LedgerError,
    UserNotFound,
)
from ledger.idempotency import IdempotencyKey
from ledger.times import parse_timestamp
from ledger.writer import Accepted
from projections.log import EventLog
from tests.helpers import BackgroundWriter, wait_until

CAUSE = Cause("service", "key_test", "req_test", None)


def outcome(future: Future[Accepted]) -> Accepted | LedgerError:
    try:
        return future.result(timeout=30)
    except LedgerError as e:
        return e


def count_events(log: EventLog, user_id: str) -> int:
    return len(log.user_events(user_id))


def test_a_command_is_answered_with_its_event_and_the_state_after_it(
    writer: BackgroundWriter,
) -> None:
    registered = writer.execute(RegisterUser("alice"), CAUSE)
    spent = writer.execute(SpendCredits("alice", 3, "image"), CAUSE)
    assert registered.event["type"] == "UserRegistered"
    assert spent.event["type"] == "CreditsSpent"
    data = spent.event["data"]
    assert (data["amount"], data["reason"]) == (3, "image")
    (drawn,) = data["grants"]  # from the registration's grant of 10
    assert drawn["amount"] == 3 and drawn["grant_id"].startswith("grant_")
    assert spent.event["position"] > registered.event["position"]
    assert spent.user["free_credits"] == 7
    assert spent.user["version"] == 2
    assert spent.user["position"] == spent.event["position"]
    assert spent.event["metadata"]["actor_role"] == "service"


def test_forty_concurrent_spends_of_ten_credits_give_ten_successes(
    log: EventLog, ledger: Ledger, writer: BackgroundWriter
) -> None:
    writer.execute(RegisterUser("hot"), CAUSE)
    start = threading.Barrier(40)

    def spend() -> Accepted | LedgerError:
        start.wait()
        return outcome(writer.submit(SpendCredits("hot", 1), CAUSE))

    with ThreadPoolExecutor(40) as pool:
        results = list(pool.map(lambda _: spend(), range(40)))
    accepted = [r for r in results if isinstance(r, Accepted)]
    refused = [r for r in results if isinstance(r, InsufficientBalance)]
    assert (len(accepted), len(refused)) == (10, 30)
    assert sorted(a.user["free_credits"] for a in accepted) == list(range(10))
    assert count_events(log, "hot") == 11


def test_two_writers_on_one_database_never_overdraw(
    log: EventLog, ledger: Ledger, database: Database
) -> None:
    # Two writers stand for two API processes: each has its own cache of users.
    other_ledger = Ledger.open(database)
    first, second = BackgroundWriter(ledger, database), BackgroundWriter(other_ledger, database)
    try:
        first.execute(RegisterUser("shared"), CAUSE)
        second.execute(SpendCredits("shared", 1), CAUSE)  # both now cache the user
        first.execute(SpendCredits("shared", 1), CAUSE)
        futures = [
            (first if i % 2 else second).submit(SpendCredits("shared", 1), CAUSE) for i in range(30)
        ]
        results = [outcome(f) for f in futures]
    finally:
        first.stop()
        second.stop()
        other_ledger.close()
    assert sum(isinstance(r, Accepted) for r in results) == 8
    assert all(isinstance(r, Accepted | InsufficientBalance) for r in results)
    assert count_events(log, "shared") == 11


def test_a_refused_command_refuses_only_itself(
    log: EventLog, ledger: Ledger, writer: BackgroundWriter
) -> None:
    results = writer.execute_together(
        [
            (RegisterUser("carol"), CAUSE),
            (SpendCredits("carol", 4), CAUSE),
            (SpendCredits("carol", 7), CAUSE),  # only 6 left: refused
            (SpendCredits("nobody", 1), CAUSE),
            (SpendChatMessages("carol", 2), CAUSE),
            (SpendCredits("carol", 6), CAUSE),
        ]
    )
    kinds = [type(r).__name__ for r in results]
    assert kinds == [
        "Accepted",
        "Accepted",
        "InsufficientBalance",
        "UserNotFound",
        "Accepted",
        "Accepted",
    ]
    last = results[-1]
    assert isinstance(last, Accepted)
    assert last.user["free_credits"] == 0
    assert [e.event.originator_version for e in log.user_events("carol")] == [1, 2, 3, 4]


def test_a_repeated_idempotency_key_returns_the_first_outcome(
    log: EventLog, ledger: Ledger, writer: BackgroundWriter
) -> None:
    writer.execute(RegisterUser("dave"), CAUSE)
    key = IdempotencyKey("key_test", "spend-1")
    first = writer.execute(SpendCredits("dave", 2), CAUSE, key)
    again = writer.execute(SpendCredits("dave", 2), CAUSE, key)
    assert again.replayed and not first.replayed
    assert (again.event, again.user) == (first.event, first.user)
    assert count_events(log, "dave") == 2
    with pytest.raises(IdempotencyKeyReused):
        writer.execute(SpendCredits("dave", 3), CAUSE, key)
    # Another API key's "spend-1" is another key.
    other = writer.execute(SpendCredits("dave", 3), CAUSE, IdempotencyKey("key_other", "spend-1"))
    assert other.user["free_credits"] == 5


def test_a_refusal_is_remembered_under_its_idempotency_key(
    log: EventLog, ledger: Ledger, writer: BackgroundWriter
) -> None:
    key = IdempotencyKey("key_test", "early")
    with pytest.raises(UserNotFound):
        writer.execute(SpendCredits("erin", 1), CAUSE, key)
    writer.execute(RegisterUser("erin"), CAUSE)
    with pytest.raises(UserNotFound):
        writer.execute(SpendCredits("erin", 1), CAUSE, key)
    assert count_events(log, "erin") == 1


def test_concurrent_requests_with_one_key_record_one_event(
    log: EventLog, ledger: Ledger, writer: BackgroundWriter
) -> None:
    writer.execute(RegisterUser("frank"), CAUSE)
    key = IdempotencyKey("key_test", "same")
    start = threading.Barrier(20)

    def send() -> Accepted | LedgerError:
        start.wait()
        return outcome(writer.submit(GrantCredits("frank", 5), CAUSE, key))

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: send(), range(20)))
    accepted = [r for r in results if isinstance(r, Accepted)]
    assert all(isinstance(r, Accepted | IdempotencyKeyInUse) for r in results)
    assert accepted and all(a.event == accepted[0].event for a in accepted)
    assert count_events(log, "frank") == 2


def test_commands_answered_after_stop_are_refused_not_lost(
    log: EventLog, ledger: Ledger, database: Database
) -> None:
    writer = BackgroundWriter(ledger, database)
    futures = [writer.submit(RegisterUser(f"user{i}"), CAUSE) for i in range(50)]
    writer._call(writer.writer.stop())
    results = [outcome(f) for f in futures]
    late = outcome(writer.submit(RegisterUser("late"), CAUSE))
    writer.stop()
    assert all(isinstance(r, Accepted) for r in results)
    assert isinstance(late, LedgerError)
    assert count_events(log, "late") == 0


def test_a_command_waits_at_most_a_few_seconds_behind_a_long_transaction(
    log: EventLog, ledger: Ledger, database: Database, writer: BackgroundWriter
) -> None:
    writer.execute(RegisterUser("gina"), CAUSE)
    with database.connect() as blocker:
        # Say, an import of a million users holding the events table's lock.
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="busy"):
            writer.execute(SpendCredits("gina", 1), CAUSE)
        waited = time.monotonic() - started
        blocker.execute("ROLLBACK")
    assert 4 < waited < 8
    assert writer.execute(SpendCredits("gina", 1), CAUSE).user["free_credits"] == 9
    assert count_events(log, "gina") == 2


def test_a_user_whose_history_this_release_cannot_read_fails_alone(
    ledger: Ledger, writer: BackgroundWriter
) -> None:
    writer.execute(RegisterUser("newer"), CAUSE)
    writer.execute(RegisterUser("older"), CAUSE)
    # An event a later release records (during a rolling deploy, say).
    state = {"timestamp": "2026-01-01T00:00:00+00:00", "cause": None, "amount": 1}
    ledger.recorder.insert_events(
        [StoredEvent("newer", 2, "ledger.domain:User.CreditsExpired", orjson.dumps(state))]
    )
    results = writer.execute_together(
        [(SpendCredits("newer", 1), CAUSE), (SpendCredits("older", 1), CAUSE)]
    )
    assert isinstance(results[0], HistoryUnreadable)
    assert isinstance(results[1], Accepted) and results[1].user["free_credits"] == 9


def test_a_key_stays_in_use_until_its_command_is_decided_even_if_the_caller_leaves(
    log: EventLog, ledger: Ledger, database: Database, writer: BackgroundWriter
) -> None:
    writer.execute(RegisterUser("hana"), CAUSE)
    key = IdempotencyKey("key_test", "leaving")
    with database.connect() as blocker:
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")  # the batch waits
        first = writer.submit(SpendCredits("hana", 1), CAUSE, key)
        time.sleep(0.2)
        first.cancel()  # the caller went away; its command is still queued
        with pytest.raises(IdempotencyKeyInUse):
            writer.execute(SpendCredits("hana", 1), CAUSE, key)
        blocker.execute("ROLLBACK")
    wait_until(lambda: count_events(log, "hana") == 2)
    time.sleep(0.1)  # the batch has committed; now it releases the key
    again = writer.execute(SpendCredits("hana", 1), CAUSE, key)
    assert again.replayed
    assert count_events(log, "hana") == 2


@pytest.mark.parametrize(
    "reason",
    [
        'it\'s a "quoted" {brace}, a comma and a \\backslash\\',
        "'); DROP TABLE ledger_holds; --",
        "unicode: ünïcödé ✓ 🧾 \u2028",
        "100% sure, a backslash alone: C:\\path\\ E'\\x41' $$ %s",
        None,
    ],
)
def test_a_holds_record_keeps_whatever_its_reason_holds(
    writer: BackgroundWriter, database: Database, reason: str | None
) -> None:
    """The holds table's rows go with the COMMIT, their values written into
    the statement: every text arrives exactly as given."""
    writer.execute(RegisterUser("quinn"), CAUSE)
    placed = writer.execute(PlaceHold("quinn", Balance.CREDITS, 4, "hold_q1", reason), CAUSE)
    assert placed.body["hold"]["reason"] == reason
    writer.execute(SettleHold("quinn", "hold_q1", 3, reason), CAUSE)
    with database.connect() as conn:
        row = conn.execute(
            "SELECT reason, status, settled_amount, amount, grants, position, created_at "
            "FROM ledger_holds WHERE user_id = 'quinn' AND hold_id = 'hold_q1'"
        ).fetchone()
    assert row is not None
    assert row[:4] == (reason, "settled", 3, 4)
    assert row[4] == [[placed.body["event"]["data"]["grants"][0]["grant_id"], 4]]
    assert row[5] == placed.event["position"]
    assert row[6] == parse_timestamp(placed.body["hold"]["created_at"])
