"""The users projection on real PostgreSQL: exactly once, in order, through crashes."""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections.abc import Iterator

import orjson
import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from ledger.application import Ledger
from ledger.commands import (
    ChangePlan,
    GrantChatMessages,
    GrantCredits,
    RegisterUser,
    SpendChatMessages,
    SpendCredits,
)
from ledger.db import Database
from ledger.domain import Cause, User
from projections import status as st
from projections.audit import audit_all
from projections.overview import overview
from projections.projector import Projector
from projections.users import UsersProjection
from tests.helpers import (
    BackgroundWriter,
    head,
    ledger_process,
    projection_position,
    rows,
    wait_caught_up,
    wait_until,
)

CAUSE = Cause("service", "key_test", "req_test", None)


@pytest.fixture
def projector(ledger: Ledger, database: Database) -> Iterator[Projector]:
    projector = Projector(database, ledger, batch_size=100, poll_interval=0.2)
    projector.start()
    yield projector
    projector.stop()


def record_some_history(writer: BackgroundWriter, users: int = 20, rounds: int = 5) -> None:
    for i in range(users):
        writer.execute(RegisterUser(f"user{i}"), CAUSE)
    for r in range(rounds):
        for i in range(users):
            for command in (
                SpendCredits(f"user{i}", 1),
                SpendChatMessages(f"user{i}", 2),
                GrantCredits(f"user{i}", 3, "top-up"),
                GrantChatMessages(f"user{i}", 1),
            ):
                writer.submit(command, CAUSE)
            if (i + r) % 7 == 0:
                writer.submit(ChangePlan(f"user{i}", "paid", "lifetime"), CAUSE)
    writer.execute(RegisterUser("sync-point"), CAUSE)


def assert_projection_is_the_replay(database: Database, ledger: Ledger) -> None:
    report = audit_all(database, ledger)
    assert report.consistent, report.mismatches[:3]
    assert report.position == head(database)
    # Each row's version is its stream's length: no event applied twice or skipped.
    mismatched = rows(
        database,
        "SELECT u.id FROM users u JOIN (SELECT originator_id, count(*) AS n FROM ledger_events "
        "GROUP BY originator_id) e ON e.originator_id = u.id WHERE u.version <> e.n",
    )
    assert mismatched == []


def test_the_projection_equals_a_replay_of_the_history(
    database: Database, ledger: Ledger, writer: BackgroundWriter, projector: Projector
) -> None:
    record_some_history(writer)
    wait_caught_up(database)
    assert_projection_is_the_replay(database, ledger)
    (row,) = rows(database, "SELECT free_credits, free_chat_messages FROM users WHERE id='user3'")
    assert row == (10 - 5 + 15, 20 - 10 + 5)


def test_the_check_constraints_refuse_negative_balances_written_in_sql(
    database: Database, writer: BackgroundWriter, projector: Projector
) -> None:
    writer.execute(RegisterUser("alice"), CAUSE)
    wait_caught_up(database)
    for column in ("free_credits", "free_chat_messages"):
        with pytest.raises(psycopg.errors.CheckViolation):
            rows(database, f"UPDATE users SET {column} = -1 WHERE id = 'alice'")
    with pytest.raises(psycopg.errors.CheckViolation):
        rows(
            database,
            "INSERT INTO users (id, free_credits, version, position, updated_at) "
            "VALUES ('mallory', -5, 1, 1, now())",
        )
    rows(database, "UPDATE users SET free_credits = NULL WHERE id = 'alice'")  # NULL is allowed


def test_a_projector_killed_between_and_mid_batch_resumes_exactly_once(
    database: Database, ledger: Ledger, writer: BackgroundWriter
) -> None:
    record_some_history(writer, users=30, rounds=6)
    # Make each row write slow, so that a kill lands inside a batch's transaction.
    rows(
        database,
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(0.002); RETURN NEW; END $$",
    )
    rows(
        database,
        "CREATE TRIGGER slow BEFORE INSERT OR UPDATE ON users FOR EACH ROW EXECUTE FUNCTION slow()",
    )
    kills_mid_batch = 0
    for attempt in range(6):
        child = ledger_process(
            "project", database=database, env={"LEDGER_PROJECTOR_BATCH_SIZE": "40"}
        )
        if attempt % 2 == 0:
            # Mid-batch: wait until its session is inside a write to the users table.
            def inside_a_batch() -> bool:
                found = rows(
                    database,
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                    'AND query LIKE \'INSERT INTO "public"."users"%%\'',
                )
                return bool(found[0][0])

            wait_until(inside_a_batch, timeout=30, every=0.001)
            kills_mid_batch += 1
        else:
            time.sleep(0.3)  # somewhere between batches, or in one
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert kills_mid_batch == 3
    rows(database, "DROP TRIGGER slow ON users")
    child = ledger_process("project", database=database)
    try:
        wait_caught_up(database, timeout=60)
    finally:
        child.terminate()
        child.wait()
    assert_projection_is_the_replay(database, ledger)


def _append(url: str, worker: int, count: int) -> None:
    database = Database(url)
    ledger = Ledger.open(database)
    writer = BackgroundWriter(ledger, database)
    own = f"w{worker}"
    writer.execute(RegisterUser(own), CAUSE)
    futures = []
    for i in range(count):
        # Half on the writer's own user, half on users every writer shares.
        user = own if i % 2 else f"shared{i % 3}"
        futures.append(writer.submit(GrantCredits(user, 1), CAUSE))
        if i % 20 == 0:
            for f in futures:
                f.result()
            futures.clear()
    for f in futures:
        f.result()
    writer.stop()
    ledger.close()


def test_no_event_is_skipped_while_eight_processes_append(
    database: Database, ledger: Ledger, writer: BackgroundWriter, projector: Projector
) -> None:
    for i in range(3):
        writer.execute(RegisterUser(f"shared{i}"), CAUSE)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append, args=(database.url, w, 300)) for w in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    assert head(database) == 3 + 8 * 301
    wait_caught_up(database)
    assert_projection_is_the_replay(database, ledger)


def test_an_event_the_projection_cannot_apply_stops_it_with_the_reason(
    database: Database, ledger: Ledger, writer: BackgroundWriter, projector: Projector
) -> None:
    writer.execute(RegisterUser("good"), CAUSE)
    writer.execute(RegisterUser("victim"), CAUSE)
    wait_caught_up(database)
    # An overdraft the write side would never record, put in behind its back.
    bad = {"timestamp": "2026-01-01T00:00:00+00:00", "cause": None, "amount": 11, "reason": None}
    ledger.recorder.insert_events(
        [StoredEvent("victim", 2, get_topic(User.CreditsSpent), orjson.dumps(bad))]
    )
    bad_position = head(database)
    writer.execute(SpendCredits("good", 1), CAUSE)
    wait_until(lambda: projector.failed, timeout=10)
    with database.connect() as conn:
        item = overview(conn)
    assert item.status == "failed"
    assert item.error is not None
    assert item.error["position"] == bad_position
    assert item.error["user_id"] == "victim"
    assert item.error["event_type"] == "CreditsSpent"
    assert projection_position(database) == bad_position - 1  # nothing after it applied
    (row,) = rows(database, "SELECT free_credits, version FROM users WHERE id = 'victim'")
    assert row == (10, 1)


def test_one_projector_leads_and_a_standby_takes_over(
    database: Database, ledger: Ledger, writer: BackgroundWriter
) -> None:
    first = Projector(database, ledger, poll_interval=0.1)
    second = Projector(database, ledger, poll_interval=0.1)
    first.start()
    wait_until(lambda: first.is_leader)
    second.start()
    writer.execute(RegisterUser("x"), CAUSE)
    wait_caught_up(database)
    assert first.is_leader and not second.is_leader
    with database.connect() as conn:
        assert st.lock_is_held(conn, st.leader_lock("users"))
    first.stop()
    wait_until(lambda: second.is_leader, timeout=5)
    writer.execute(SpendCredits("x", 1), CAUSE)
    wait_caught_up(database)
    second.stop()
    assert_projection_is_the_replay(database, ledger)


def test_a_projector_of_an_older_release_stands_by_before_a_newer_table(
    database: Database, ledger: Ledger, writer: BackgroundWriter
) -> None:
    writer.execute(RegisterUser("x"), CAUSE)
    # A later release (its projection's next code version) rebuilt the table.
    newer = f"{UsersProjection().code_version + 1}.abc"
    rows(database, "UPDATE projection_status SET version = %s WHERE name = 'users'", (newer,))
    old = Projector(database, ledger, poll_interval=0.05)
    old.start()
    try:
        time.sleep(0.5)
        assert not old.is_leader
        assert projection_position(database) == 0  # it did not write the newer table
        with database.connect() as conn:
            status = st.read_status(conn, "users")
        assert status is not None and status.rebuild_requested is None
    finally:
        old.stop()
