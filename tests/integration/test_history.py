"""History with running state, state as of a time or version, and audits."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest

from api.cli.generate import old_registration
from ledger.application import Ledger
from ledger.commands import ChangePlan, GrantChatMessages, GrantCredits, SpendCredits
from ledger.db import Database
from ledger.domain import Cause
from projections.audit import audit_all
from projections.history import state_at, timeline
from projections.log import EventLog
from tests.helpers import BackgroundWriter, audit, project_once, rows

CAUSE = Cause("admin", "key_audit", "req_1", "grant-500")


@pytest.fixture
def scripted(log: EventLog, ledger: Ledger, writer: BackgroundWriter) -> list[datetime]:
    """A user from before the credit system, then four changes a few ms apart.
    Returns the recorded time of each of the five events."""
    ledger.recorder.insert_events([old_registration("veteran", "pro", "monthly")])
    times = [log.user_events("veteran")[0].event.timestamp]
    for command in (
        GrantCredits("veteran", 500, "loyalty"),
        SpendCredits("veteran", 7, "image"),
        ChangePlan("veteran", "paid", "lifetime"),
        GrantChatMessages("veteran", 30),
    ):
        time.sleep(0.002)
        accepted = writer.execute(command, CAUSE)
        times.append(datetime.fromisoformat(accepted.event["recorded_at"]))
    return times


def test_the_timeline_shows_the_state_after_each_event(
    log: EventLog, ledger: Ledger, scripted: list[datetime]
) -> None:
    steps, _ = timeline(log, "veteran")
    assert [type(s.recorded.event).__name__ for s in steps] == [
        "UserRegistered",
        "CreditsGranted",
        "CreditsSpent",
        "PlanChanged",
        "ChatMessagesGranted",
    ]
    assert [s.state.free_credits for s in steps] == [10, 510, 503, 503, 503]
    assert [s.state.free_chat_messages for s in steps] == [20, 20, 20, 20, 50]
    assert [s.state.level for s in steps] == ["pro", "pro", "pro", "paid", "paid"]
    positions = [s.recorded.position for s in steps]
    assert positions == sorted(positions)


def test_who_granted_the_credits_and_when(
    log: EventLog, ledger: Ledger, scripted: list[datetime]
) -> None:
    grant = next(
        s for s in timeline(log, "veteran")[0] if s.recorded.event.data.get("amount") == 500
    )
    assert grant.recorded.event.cause == {
        "actor_role": "admin",
        "actor_key_id": "key_audit",
        "request_id": "req_1",
        "idempotency_key": "grant-500",
    }
    assert grant.recorded.event.timestamp == scripted[1]


def test_the_state_at_a_time_includes_events_recorded_at_that_time(
    log: EventLog, ledger: Ledger, scripted: list[datetime]
) -> None:
    at_spend = state_at(log, "veteran", at=scripted[2])
    assert at_spend is not None
    assert (at_spend.state.free_credits, at_spend.state.version) == (503, 3)
    just_before = state_at(log, "veteran", at=scripted[2] - timedelta(microseconds=1))
    assert just_before is not None and just_before.state.free_credits == 510
    assert state_at(log, "veteran", at=scripted[0] - timedelta(seconds=1)) is None
    latest = state_at(log, "veteran", at=scripted[-1] + timedelta(days=1))
    assert latest is not None and latest.state.version == 5


def test_the_state_at_a_version(log: EventLog, ledger: Ledger, scripted: list[datetime]) -> None:
    first = state_at(log, "veteran", version=1)
    assert first is not None
    assert (first.state.level, first.state.renewal_period) == ("pro", "monthly")
    assert (first.state.free_credits, first.state.free_chat_messages) == (10, 20)
    fourth = state_at(log, "veteran", version=4)
    assert fourth is not None and fourth.state.level == "paid"


def test_an_audit_catches_a_row_changed_behind_the_projectors_back(
    database: Database, ledger: Ledger, scripted: list[datetime]
) -> None:
    project_once(database, ledger)
    clean = audit(database, ledger, "veteran")
    assert clean is not None and clean.consistent

    rows(database, "UPDATE users SET free_credits = 999999 WHERE id = 'veteran'")

    result = audit(database, ledger, "veteran")
    assert result is not None and not result.consistent
    assert result.differences == [{"field": "free_credits", "projected": 999999, "replayed": 503}]
    report = audit_all(database, ledger)
    assert [m.user_id for m in report.mismatches] == ["veteran"]
    assert report.users_checked == 1
    assert report.events_replayed == 5


def test_an_audit_reports_rows_without_history_and_users_without_rows(
    database: Database, ledger: Ledger, scripted: list[datetime]
) -> None:
    project_once(database, ledger)
    rows(
        database,
        "INSERT INTO users (id, version, position, updated_at) VALUES ('ghost', 1, 1, now())",
    )
    rows(database, "DELETE FROM users WHERE id = 'veteran'")
    report = audit_all(database, ledger)
    found = {m.user_id: m.differences for m in report.mismatches}
    assert found == {
        "veteran": [{"field": "exists", "projected": False, "replayed": True}],
        "ghost": [{"field": "exists", "projected": True, "replayed": False}],
    }


def test_an_audit_reads_the_state_a_row_keeps_as_the_projector_does(
    database: Database, ledger: Ledger, scripted: list[datetime]
) -> None:
    """A row lists its grants in whatever order wrote it (a row of an earlier
    release, as they were granted); the state it keeps is what it says."""
    project_once(database, ledger)
    ((count,),) = rows(
        database, "SELECT jsonb_array_length(fold_state->'grants') FROM users WHERE id = 'veteran'"
    )
    assert count >= 2
    rows(
        database,
        "UPDATE users SET fold_state = jsonb_set(fold_state, '{grants}', (SELECT jsonb_agg(g "
        "ORDER BY ordinality DESC) FROM jsonb_array_elements(fold_state->'grants') "
        "WITH ORDINALITY AS a(g, ordinality))) WHERE id = 'veteran'",
    )
    reordered = audit(database, ledger, "veteran")
    assert reordered is not None and reordered.consistent

    rows(
        database,
        "UPDATE users SET fold_state = jsonb_set(fold_state, '{grants,0,remaining}', '12345') "
        "WHERE id = 'veteran'",
    )
    changed = audit(database, ledger, "veteran")
    assert changed is not None and not changed.consistent
    assert [d["field"] for d in changed.differences] == ["fold_state"]
