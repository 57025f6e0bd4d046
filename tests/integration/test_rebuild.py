"""Rebuilding the users table from history, beside the live one, without downtime."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import orjson
import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from api.cli.generate import old_registration
from ledger.application import Ledger
from ledger.commands import GrantCredits, RegisterUser, SpendChatMessages, SpendCredits
from ledger.db import Database
from ledger.domain import Cause, User
from projections import users_table
from projections.audit import audit_all
from projections.log import EventLog
from projections.overview import overview
from projections.projector import Projector
from projections.rebuild import Rebuild, RebuildError
from projections.rebuilds import BackgroundRebuilds
from projections.users import UsersProjection
from tests.helpers import BackgroundWriter, head, ledger_process, rows, wait_caught_up, wait_until

CAUSE = Cause("service", "key_test", "req_test", None)


@pytest.fixture
def projector(ledger: Ledger, database: Database) -> Iterator[Projector]:
    projector = Projector(database, ledger, poll_interval=0.1)
    projector.start()
    yield projector
    projector.stop()


def history_with_old_shapes(ledger: Ledger, writer: BackgroundWriter, users: int = 30) -> None:
    """Users from before the credit system (old event shape) and new ones, with spends."""
    ledger.recorder.insert_events(
        [old_registration(f"old{i}", "pro", "monthly") for i in range(users // 3)]
    )
    for i in range(users - users // 3):
        writer.execute(RegisterUser(f"new{i}"), CAUSE)
    for i in range(users // 3):
        writer.execute(SpendCredits(f"old{i}", 1 + i % 5), CAUSE)
        writer.execute(SpendChatMessages(f"old{i}", 1), CAUSE)
    for i in range(users - users // 3):
        writer.execute(SpendCredits(f"new{i}", 2), CAUSE)
        writer.execute(GrantCredits(f"new{i}", 7), CAUSE)


def test_old_shape_events_read_with_the_credit_defaults(
    log: EventLog,
    database: Database,
    ledger: Ledger,
    writer: BackgroundWriter,
    projector: Projector,
) -> None:
    ledger.recorder.insert_events([old_registration("veteran", "basic", "monthly")])
    (recorded,) = log.user_events("veteran")
    assert isinstance(recorded.event, User.UserRegistered)
    assert (recorded.event.free_credits, recorded.event.free_chat_messages) == (10, 20)
    spent = writer.execute(SpendCredits("veteran", 10), CAUSE)
    assert spent.user["level"] == "basic"
    assert spent.user["free_credits"] == 0
    wait_caught_up(database)
    (row,) = rows(
        database,
        "SELECT level, renewal_period, free_credits, free_chat_messages "
        "FROM users WHERE id = 'veteran'",
    )
    assert row == ("basic", "monthly", 0, 20)


def test_a_rebuild_swaps_in_an_identical_table_while_commands_and_reads_go_on(
    database: Database, ledger: Ledger, writer: BackgroundWriter, projector: Projector
) -> None:
    history_with_old_shapes(ledger, writer)
    wait_caught_up(database)
    before = rows(database, "SELECT * FROM users ORDER BY id")
    (oid_before,) = rows(database, "SELECT 'users'::regclass::oid")

    stop = threading.Event()
    errors: list[BaseException] = []
    done = {"commands": 0, "reads": 0}

    def keep_writing() -> None:
        i = 0
        while not stop.is_set():
            try:
                writer.execute(GrantCredits(f"new{i % 10}", 1), CAUSE)
                done["commands"] += 1
            except BaseException as e:
                errors.append(e)
            i += 1

    def keep_reading() -> None:
        with database.connect() as conn:
            while not stop.is_set():
                try:
                    conn.execute("SELECT count(*) FROM users WHERE free_credits >= 0").fetchone()
                    done["reads"] += 1
                except BaseException as e:
                    errors.append(e)

    threads = [threading.Thread(target=keep_writing), threading.Thread(target=keep_reading)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.2)
        result = Rebuild(database, ledger).run()
        time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert done["commands"] > 0 and done["reads"] > 0
    assert result.users == 30
    (oid_after,) = rows(database, "SELECT 'users'::regclass::oid")
    assert oid_after != oid_before  # a new table, swapped in
    wait_caught_up(database)
    assert audit_all(database, ledger).consistent
    after = {r[0]: r for r in rows(database, "SELECT * FROM users ORDER BY id")}
    assert {r[0] for r in before} <= after.keys()
    assert rows(database, "SELECT nspname FROM pg_namespace WHERE nspname = 'ledger_rebuild'") == []


def test_a_changed_projection_is_rebuilt_from_old_history_on_start(
    database: Database, ledger: Ledger, writer: BackgroundWriter, projector: Projector
) -> None:
    history_with_old_shapes(ledger, writer)
    wait_caught_up(database)
    projector.stop()

    # The next version adds a column derived from history: credits ever spent.
    v1 = UsersProjection()
    version_column = "    version             bigint NOT NULL,"
    schema = v1.schema_sql.replace(
        version_column, "    credits_spent_total bigint NOT NULL DEFAULT 0,\n" + version_column
    )
    assert schema != v1.schema_sql
    v2 = UsersProjection(
        code_version=v1.code_version + 1,
        schema_sql=schema,
        columns=(*v1.columns, "credits_spent_total"),
    )
    rebuilds = BackgroundRebuilds(database, ledger, v2)
    new_projector = Projector(
        database, ledger, v2, poll_interval=0.1, start_rebuild=rebuilds.request
    )
    new_projector.start()
    try:

        def swapped() -> bool:
            with database.connect() as conn:
                return overview(conn).version == v2.version

        wait_until(swapped, timeout=30)
        writer.execute(SpendCredits("new0", 4), CAUSE)  # the new table keeps being projected
        wait_caught_up(database)
    finally:
        new_projector.stop()
        rebuilds.join(5)
    totals = dict(rows(database, "SELECT id, credits_spent_total FROM users"))
    assert totals["old4"] == 5  # the old-shape user spent 1 + 4 % 5
    assert totals["new0"] == 2 + 4
    assert totals["new5"] == 2
    (row,) = rows(database, "SELECT free_credits FROM users WHERE id = 'old4'")
    assert row == (5,)
    assert audit_all(database, ledger, v2).consistent


def test_a_rebuild_that_meets_a_bad_event_leaves_the_live_table_alone(
    database: Database, ledger: Ledger, writer: BackgroundWriter, projector: Projector
) -> None:
    writer.execute(RegisterUser("a"), CAUSE)
    wait_caught_up(database)
    bad = {"timestamp": "2026-01-01T00:00:00+00:00", "cause": None, "amount": 99, "reason": None}
    ledger.recorder.insert_events(
        [StoredEvent("a", 2, get_topic(User.CreditsSpent), orjson.dumps(bad))]
    )
    with pytest.raises(RebuildError, match="position"):
        Rebuild(database, ledger).run()
    assert rows(database, "SELECT id FROM users") == [("a",)]
    with database.connect() as conn:
        item = overview(conn)
        assert item.rebuild is not None and item.rebuild["phase"] == "failed"
        assert users_table.exists(conn, "public")


def test_a_rebuild_killed_at_any_point_leaves_a_users_table_and_can_run_again(
    database: Database, ledger: Ledger, writer: BackgroundWriter, projector: Projector
) -> None:
    history_with_old_shapes(ledger, writer, users=60)
    for i in range(2000):
        writer.submit(
            SpendChatMessages(f"new{i % 40}", 1) if i % 2 else GrantCredits(f"new{i % 40}", 1),
            CAUSE,
        )
    writer.execute(RegisterUser("last"), CAUSE)
    wait_caught_up(database)
    for delay in (0.05, 0.3, 0.6, 1.0):
        child = ledger_process("rebuild", database=database)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        with database.connect() as conn:
            assert users_table.exists(conn, "public")
            conn.execute("SELECT count(*) FROM users").fetchone()
    wait_caught_up(database)
    result = Rebuild(database, ledger).run()
    assert result.position >= head(database) - 1
    wait_caught_up(database)
    assert audit_all(database, ledger).consistent
    with database.connect() as conn, pytest.raises(psycopg.errors.UndefinedTable):
        conn.execute("SELECT 1 FROM ledger_rebuild.users")


def test_a_new_enum_value_in_the_schema_reaches_the_database_with_the_rebuild(
    database: Database, ledger: Ledger, writer: BackgroundWriter
) -> None:
    writer.execute(RegisterUser("a"), CAUSE)
    v1 = UsersProjection()
    added = "ALTER TYPE public.user_level ADD VALUE IF NOT EXISTS 'enterprise';\n"
    v2 = UsersProjection(schema_sql=v1.schema_sql + added)
    assert v2.version != v1.version
    Rebuild(database, ledger, v2).run()
    levels = rows(database, "SELECT unnest(enum_range(NULL::user_level))::text")
    assert ("enterprise",) in levels
    assert rows(database, "SELECT id FROM users") == [("a",)]
