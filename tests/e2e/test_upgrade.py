"""Deploying this release over a database the previous one recorded: the users
table gains its held and next-expiry columns, and a grants table, by a live
rebuild from the history, while commands (holds among them) go on throughout.

The history is a fixture of stored events recorded by the previous release
(`ledger generate`), with the users table and projection version it left
(tests/fixtures/previous_release/)."""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from ledger.db import Database
from projections import status as st
from projections.rebuild import STAGING_SCHEMA
from projections.users import UsersProjection
from tests.e2e.conftest import Api
from tests.helpers import ServedLedger, rows, wait_until
from tests.reliability.conftest import assert_projection_is_the_replay

FIXTURE = Path(__file__).parents[1] / "fixtures" / "previous_release"


def _lines(name: str) -> list[dict[str, Any]]:
    with gzip.open(FIXTURE / name, "rt") as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def previous_release(server: Database, template: str) -> Iterator[Database]:
    """A database as the previous release left it: its events, its users table
    (of its own schema), its projection's version and position."""
    name = f"ledger_upgrade_{uuid.uuid4().hex[:10]}"
    rows(server, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    database = server.with_name(name)
    events = _lines("events.jsonl.gz")
    with database.connect() as conn, conn.transaction():
        conn.execute("DROP TABLE users, grants")
        conn.execute((FIXTURE / "schema.sql").read_bytes())
        with conn.cursor().copy(
            "COPY ledger_events (notification_id, originator_id, originator_version, topic, "
            "state) FROM STDIN"
        ) as copy:
            for e in events:
                state = json.dumps(e["state"], separators=(",", ":")).encode()
                copy.write_row((e["position"], e["user_id"], e["version"], e["topic"], state))
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('ledger_events', 'notification_id'), %s)",
            (events[-1]["position"],),
        )
        columns = ("id", "level", "renewal_period", "free_credits", "free_chat_messages")
        columns += ("version", "position", "updated_at")
        with conn.cursor().copy(
            sql.SQL("COPY users ({}) FROM STDIN").format(
                sql.SQL(", ").join(map(sql.Identifier, columns))
            )
        ) as copy:
            for user in _lines("users.jsonl.gz"):
                copy.write_row(tuple(user[c] for c in columns))
        version = (FIXTURE / "version").read_text().strip()
        conn.execute("UPDATE projection_status SET version = %s WHERE name = 'users'", (version,))
        st.reset_position(conn, "users", events[-1]["position"])
    yield database
    rows(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def rebuild_held_at_its_start(database: Database) -> Iterator[Callable[[], None]]:
    """A rebuild started in the block waits at its first step (it drops the
    staging schema, and a session here holds a lock in it) until the block
    calls what it is given, or ends."""
    with database.connect() as setup, database.connect(autocommit=False) as holder:
        setup.execute(f"CREATE SCHEMA IF NOT EXISTS {STAGING_SCHEMA}")
        setup.execute(f"CREATE TABLE IF NOT EXISTS {STAGING_SCHEMA}.users (id text)")
        holder.execute(f"LOCK TABLE {STAGING_SCHEMA}.users IN ACCESS SHARE MODE")
        yield holder.rollback
        holder.rollback()


def test_the_new_columns_arrive_by_a_live_rebuild_while_commands_go_on(
    previous_release: Database,
) -> None:
    database = previous_release
    before = {u["id"]: u for u in _lines("users.jsonl.gz")}
    busy, *others = sorted(before)
    outcomes: Counter[tuple[str, int]] = Counter()
    stop = threading.Event()

    with rebuild_held_at_its_start(database) as let_go, ServedLedger(database) as served:
        api = Api(served)

        def keep_using() -> None:
            while not stop.is_set():
                held = api.post(f"/v1/users/{busy}/chat-messages/holds", {"amount": 1})
                outcomes["hold", held.status_code] += 1
                if held.status_code == 201:
                    hold_id = held.json()["hold"]["id"]
                    settled = api.post(f"/v1/users/{busy}/holds/{hold_id}/settle", {"amount": 1})
                    outcomes["settle", settled.status_code] += 1
                spent = api.post(f"/v1/users/{busy}/credits/spends", {"amount": 1})
                outcomes["spend", spent.status_code] += 1
                read = api.get(f"/v1/users/{others[0]}")
                outcomes["read", read.status_code] += 1

        worker = threading.Thread(target=keep_using)
        worker.start()
        try:
            # The projector has asked for the rebuild, which waits; meanwhile
            # the old table keeps being projected, and commands are answered.
            wait_until(lambda: api.projection()["rebuild_requested"], timeout=30)
            wait_until(lambda: outcomes["settle", 200] >= 5, timeout=30)
            assert api.projection()["version"] != UsersProjection().version
            old_table = api.current(busy)  # projected onto the old table, shown whole
            assert (old_table["free_credits_held"], old_table["free_credits_next_expiry_at"]) == (
                0,
                None,
            )
            api.problem(api.get(f"/v1/users/{busy}/grants"), 503, "projection-rebuilding")
            served_before_swap = sum(outcomes.values())
            let_go()
            wait_until(
                lambda: (
                    api.projection()["version"] == UsersProjection().version
                    and api.projection()["lag"] == 0
                ),
                timeout=60,
            )
            wait_until(lambda: sum(outcomes.values()) > served_before_swap + 20, timeout=30)
        finally:
            stop.set()
            worker.join()

        assert outcomes["hold", 201] and outcomes["spend", 201] and outcomes["read", 200]
        assert not {k: n for k, n in outcomes.items() if k[1] >= 500}, outcomes
        audit = assert_projection_is_the_replay(database)
        assert audit.users_checked == len(before)
        untouched = others[1]
        now = api.current(untouched)
        for name in ("level", "renewal_period", "free_credits", "free_chat_messages", "version"):
            assert now[name] == before[untouched][name], name
        assert now["free_credits_held"] == 0 and now["free_credits_next_expiry_at"] is None
        (count,) = rows(database, "SELECT count(*) FROM grants WHERE user_id = %s", (untouched,))
        assert count[0] >= 1
        busy_now = api.current(busy)
        assert busy_now["free_chat_messages_held"] == 0
        assert api.json(api.get(f"/v1/users/{busy}/grants"))["items"]
