"""The `ledger` command as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from psycopg import sql

from api.embedded import start as start_embedded
from ledger.commands import GrantCredits, RegisterUser, SpendCredits
from ledger.db import Database
from ledger.domain import Cause
from ledger.idempotency import IdempotencyKey
from projections.users import UsersProjection
from tests.helpers import (
    BackgroundWriter,
    ledger_process,
    project_once,
    record_unreadable_event,
    rows,
    wait_until,
)

CAUSE = Cause("admin", "key_cli", "req_cli", None)
COMMANDS = [
    "serve",
    "project",
    "rebuild",
    "audit",
    "import",
    "db init",
    "db prune-keys",
    "generate",
    "verify",
]


def ledger(database: Database, *args: str) -> subprocess.CompletedProcess[str]:
    process = ledger_process(
        *args, database=database, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out.decode(), err.decode())


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", *command.split(), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert "usage: ledger" in result.stdout
    if command != "generate":
        assert "--database-url" in result.stdout


def test_several_processes_creating_the_tables_at_once_all_succeed(server: Database) -> None:
    name = f"ledger_cli_init_{os.getpid()}"
    with server.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database = server.with_name(name)
    try:
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "api.cli", "db", "init", "--database-url", database.url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(4)
        ]
        outcomes = [(p.wait(120), p.stderr.read().decode() if p.stderr else "") for p in processes]
        assert [code for code, _ in outcomes] == [0, 0, 0, 0], outcomes
        tables = {
            r[0]
            for r in rows(database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert {
            "ledger_events",
            "users",
            "projection_tracking",
            "projection_status",
            "ledger_idempotency_keys",
        } <= tables
    finally:
        with server.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_audit_prints_the_timeline_and_exits_1_on_a_difference(
    database: Database, writer: BackgroundWriter
) -> None:
    writer.execute(RegisterUser("carol"), CAUSE)
    writer.execute(GrantCredits("carol", 500, "loyalty"), CAUSE)
    writer.execute(SpendCredits("carol", 3, "image"), CAUSE)
    project_once(database)

    good = ledger(database, "audit", "carol")
    assert good.returncode == 0, good.stderr
    explanation, _, timeline = good.stdout.partition("\ntime ")
    assert "free_credits: 507 credits available" in explanation  # above the timeline
    assert "grant " in explanation and "(registration)" in explanation
    lines = ("time " + timeline).splitlines()
    assert lines[0].split()[:5] == ["time", "event", "amount", "credits", "chat"]
    assert "CreditsGranted" in lines[3] and "510" in lines[3] and "loyalty" in lines[3]
    assert "admin key_cli" in lines[3]
    assert "consistent with the history" in good.stdout

    rows(database, "UPDATE users SET free_chat_messages = 0 WHERE id = 'carol'")
    bad = ledger(database, "audit", "carol")
    assert bad.returncode == 1
    assert "free_chat_messages: projected 0, replayed 20" in bad.stdout

    everyone = ledger(database, "audit")
    assert everyone.returncode == 1
    assert "Checked 1 users against 3 events" in everyone.stdout
    assert "1 mismatches" in everyone.stdout

    as_json = ledger(database, "audit", "carol", "--json")
    assert '"consistent":false' in as_json.stdout

    missing = ledger(database, "audit", "nobody")
    assert missing.returncode == 1


def test_rebuild_shows_progress_and_swaps_in_a_fresh_table(
    database: Database, writer: BackgroundWriter
) -> None:
    writer.execute_together([(RegisterUser(f"u{i}"), CAUSE) for i in range(200)])
    writer.execute_together([(SpendCredits(f"u{i}", 1), CAUSE) for i in range(200)])
    (oid_before,) = rows(database, "SELECT 'users'::regclass::oid")
    result = ledger(database, "rebuild")
    assert result.returncode == 0, result.stderr
    assert f"Rebuilt users (version {UsersProjection().version})" in result.stdout
    assert "200 users from 400 events" in result.stdout + result.stderr
    assert "events/s" in result.stdout + result.stderr
    (oid_after,) = rows(database, "SELECT 'users'::regclass::oid")
    assert oid_after != oid_before
    assert rows(database, "SELECT count(*), sum(free_credits) FROM users") == [(200, 1800)]


def test_the_embedded_server_starts_again_after_a_kill_9(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_DATABASE_URL"}
    env["LEDGER_HOME"] = str(tmp_path)

    def db_init() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "api.cli", "db", "init"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    first = db_init()
    assert first.returncode == 0, first.stderr
    database = start_embedded(tmp_path, stop_on_exit=False)  # joins the running server
    rows(
        database,
        "INSERT INTO ledger_idempotency_keys (principal, key, fingerprint, outcome) "
        "VALUES ('p', 'k', 'f', '{}')",
    )
    pid_file = tmp_path / "pgdata" / "postmaster.pid"
    os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGKILL)
    time.sleep(0.2)
    assert pid_file.exists()  # stale: what a kill -9 leaves behind

    again = db_init()
    assert again.returncode == 0, again.stderr
    restarted = start_embedded(tmp_path, stop_on_exit=False)
    try:
        assert rows(restarted, "SELECT key FROM ledger_idempotency_keys") == [("k",)]
    finally:
        os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGINT)  # a fast shutdown
        wait_until(lambda: not pid_file.exists(), timeout=30)


def test_audit_at_a_time_tells_one_user_or_the_whole_ledger_as_it_was(
    database: Database, writer: BackgroundWriter
) -> None:
    first = writer.execute(RegisterUser("early"), CAUSE)
    writer.execute(SpendCredits("early", 4), CAUSE)
    moment = first.event["recorded_at"]
    time.sleep(0.01)
    writer.execute(RegisterUser("late"), CAUSE)

    at_registration = ledger(database, "audit", "early", "--at", moment, "--json")
    assert at_registration.returncode == 0
    assert '"free_credits":10' in at_registration.stdout

    before_anyone = ledger(database, "audit", "late", "--at", moment)
    assert before_anyone.returncode == 1
    assert "no user 'late' at" in before_anyone.stderr

    whole = ledger(database, "audit", "--at", moment)
    assert whole.returncode == 0, whole.stderr
    assert "1 users (1 free); 10 credits and 20 chat messages outstanding" in whole.stdout
    now = ledger(database, "audit", "--at", "2999-01-01T00:00:00Z", "--json")
    assert '"users":2' in now.stdout and '"free_credits":16' in now.stdout


def test_pruning_idempotency_keys_forgets_only_the_old_ones(
    database: Database, writer: BackgroundWriter
) -> None:
    writer.execute(RegisterUser("pat"), CAUSE)
    old, recent = IdempotencyKey("key_cli", "old"), IdempotencyKey("key_cli", "recent")
    writer.execute(SpendCredits("pat", 1), CAUSE, old)
    writer.execute(SpendCredits("pat", 1), CAUSE, recent)
    with database.connect() as conn:
        conn.execute(
            "UPDATE ledger_idempotency_keys SET created_at = now() - interval '31 days' "
            "WHERE key = 'old'"
        )

    too_young = ledger(database, "db", "prune-keys", "--older-than", "30m")
    assert too_young.returncode == 2
    assert "1h or more" in too_young.stderr
    too_old = ledger(database, "db", "prune-keys", "--older-than", "999999d")
    assert too_old.returncode == 2
    assert "at most 36500d" in too_old.stderr
    pruned = ledger(database, "db", "prune-keys", "--older-than", "30d")
    assert pruned.returncode == 0, pruned.stderr
    assert "Pruned 1 idempotency keys first used before " in pruned.stdout

    assert writer.execute(SpendCredits("pat", 1), CAUSE, recent).replayed
    # A pruned key is a new request: it spends again.
    again = writer.execute(SpendCredits("pat", 1), CAUSE, old)
    assert not again.replayed
    assert again.user["free_credits"] == 7


def test_a_command_that_cannot_do_its_work_says_why_and_exits_3(
    database: Database, writer: BackgroundWriter
) -> None:
    writer.execute(RegisterUser("newer"), CAUSE)
    project_once(database)
    record_unreadable_event(database, "newer", 2)

    registered_at = rows(
        database,
        "SELECT convert_from(state, 'UTF8')::jsonb->>'timestamp' FROM ledger_events "
        "WHERE originator_id = 'newer' AND originator_version = 1",
    )[0][0]
    before_it = ledger(database, "audit", "newer", "--at", registered_at)
    everyone_before_it = ledger(database, "audit", "--at", registered_at)
    one = ledger(database, "audit", "newer")
    as_of = ledger(database, "audit", "--at", "2999-01-01T00:00:00Z")
    rebuilt = ledger(database, "rebuild")
    unreachable = ledger(Database("postgresql://postgres@127.0.0.1:1/nowhere"), "audit")

    assert before_it.returncode == 0, before_it.stderr
    assert "UserRegistered" in before_it.stdout
    assert everyone_before_it.returncode == 0, everyone_before_it.stderr
    assert "1 users (1 free)" in everyone_before_it.stdout
    for result in (one, as_of, rebuilt):
        assert result.returncode == 3, result.stderr
        assert "'newer''s event 2 (ledger.domain:User.CreditsExpired) cannot be read" in (
            result.stderr
        )
        assert "Traceback" not in result.stderr
    assert unreachable.returncode == 3
    assert unreachable.stderr.startswith("ledger: cannot reach the database: ")
    assert "Traceback" not in unreachable.stderr


def test_a_database_that_does_not_exist_is_said_at_once(database: Database) -> None:
    nowhere = database.with_name(f"{database.name}_nowhere")

    started = time.monotonic()
    result = ledger(nowhere, "db", "init")

    # At once: not after the half minute allowed for a server that is starting.
    assert time.monotonic() - started < 15
    assert result.returncode == 3
    assert "does not exist" in result.stderr


def test_serve_refuses_a_stripe_catalogue_with_mistakes_naming_each_sku_and_field(
    database: Database, tmp_path: Path
) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(
        '[sku.lifetime]\namount = 49.00\ncurrency = "usd"\ncredits = 500\n\n'
        '[sku.pack]\namount = 900\ncurrency = "usd"\ncredits = 100\npriority = 200\n'
    )
    env = {"LEDGER_STRIPE_WEBHOOK_SECRETS": "whsec_test", "LEDGER_STRIPE_CATALOG": str(path)}
    process = ledger_process(
        "serve",
        "--port",
        "1",
        database=database,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, err = process.communicate(timeout=60)
    without = ledger_process(
        "serve",
        "--port",
        "1",
        database=database,
        env={"LEDGER_STRIPE_WEBHOOK_SECRETS": "whsec_test"},
        stderr=subprocess.PIPE,
    )
    _, missing = without.communicate(timeout=60)

    assert process.returncode == 2
    assert "sku.lifetime: amount: must be a whole number" in err.decode()
    assert "sku.pack: priority: must be a whole number from 0 to 100, not 200" in err.decode()
    assert "Traceback" not in err.decode()
    assert without.returncode == 2
    assert "LEDGER_STRIPE_CATALOG is not" in missing.decode()
