"""Snapshots: a long stream is never replayed from its first event by a writer
or a history page, and never trusted by an audit."""

from __future__ import annotations

import orjson
import pytest

from ledger import snapshots
from ledger.application import Ledger
from ledger.commands import GrantCredits, RegisterUser, SpendCredits
from ledger.db import Database
from ledger.domain import Cause, fold
from projections.history import state_at, timeline
from projections.log import EventLog
from tests.helpers import BackgroundWriter, audit, project_once, rows

CAUSE = Cause("admin", "key_snap", None, None)


@pytest.fixture
def long_stream(writer: BackgroundWriter) -> str:
    """A user with 2,501 events, recorded 500 at a time."""
    writer.execute(RegisterUser("chatty"), CAUSE)
    for _ in range(5):
        writer.execute_together([(GrantCredits("chatty", 1, "daily"), CAUSE)] * 500)
    return "chatty"


def stored_snapshots(database: Database, user_id: str) -> list[tuple[int, int]]:
    return [
        (version, position)
        for version, position in rows(
            database,
            "SELECT version, position FROM ledger_snapshots WHERE user_id = %s ORDER BY version",
            (user_id,),
        )
    ]


def test_a_snapshot_is_taken_as_a_stream_passes_each_thousand_events(
    log: EventLog, database: Database, ledger: Ledger, long_stream: str
) -> None:
    taken = stored_snapshots(database, long_stream)
    assert [version for version, _ in taken] == [1001, 2001]
    events = log.user_events(long_stream)
    for version, position in taken:
        snapshot = log.snapshot(long_stream, version=version)
        assert snapshot is not None
        assert snapshot.state == fold(r.event for r in events[:version])
        assert snapshot.position == position == events[version - 1].position


def test_a_writer_meeting_a_user_for_the_first_time_starts_from_the_snapshot(
    database: Database, ledger: Ledger, long_stream: str
) -> None:
    # Make the latest snapshot say something history does not, to see it used.
    (state,) = rows(database, "SELECT state FROM ledger_snapshots WHERE version = 2001")
    doctored = orjson.loads(state[0])
    doctored["free_credits"] += 5_000
    credits = next(g for g in doctored["grants"] if g["balance"] == "free_credits")
    credits["remaining"] += 5_000  # available is the sum of the grants' remainders
    rows(
        database,
        "UPDATE ledger_snapshots SET state = %s WHERE version = 2001",
        (orjson.dumps(doctored),),
    )
    fresh = BackgroundWriter(ledger, database)  # a new process, say: nothing cached
    try:
        spent = fresh.execute(SpendCredits(long_stream, 1), CAUSE)
    finally:
        fresh.stop()
    assert spent.user["version"] == 2502
    assert spent.user["free_credits"] == 10 + 2500 - 1 + 5_000


def test_snapshots_of_another_fold_are_ignored(
    log: EventLog, database: Database, ledger: Ledger, long_stream: str
) -> None:
    rows(database, "UPDATE ledger_snapshots SET fold = fold + 1, state = '{}'::bytea")
    fresh = BackgroundWriter(ledger, database)
    try:
        spent = fresh.execute(SpendCredits(long_stream, 1), CAUSE)
    finally:
        fresh.stop()
    assert spent.user["free_credits"] == 10 + 2500 - 1
    assert log.snapshot(long_stream) is None


def test_a_snapshot_this_release_cannot_read_is_passed_over(
    log: EventLog, database: Database, ledger: Ledger, long_stream: str
) -> None:
    rows(database, "UPDATE ledger_snapshots SET state = '{\"id\": 1}'::bytea")
    everything, _ = timeline(log, long_stream)

    fresh = BackgroundWriter(ledger, database)
    try:
        spent = fresh.execute(SpendCredits(long_stream, 1), CAUSE)
    finally:
        fresh.stop()
    page, _ = timeline(log, long_stream, after_version=2200, limit=1)
    found = state_at(log, long_stream, version=2001)

    assert spent.user["free_credits"] == 10 + 2500 - 1
    assert log.snapshot(long_stream) is None
    assert [s.state for s in page] == [everything[2200].state]
    assert found is not None and found.state == everything[2000].state


def test_history_deep_in_a_stream_matches_a_replay_from_the_first_event(
    log: EventLog, ledger: Ledger, long_stream: str
) -> None:
    everything, _ = timeline(log, long_stream)
    page, _ = timeline(log, long_stream, after_version=2200, limit=10)
    assert [s.recorded.event.originator_version for s in page] == list(range(2201, 2211))
    assert [s.state for s in page] == [s.state for s in everything[2200:2210]]

    for version in (1000, 1001, 1002, 2001, 2501):
        found = state_at(log, long_stream, version=version)
        assert found is not None
        assert found.state == everything[version - 1].state
        assert found.position == everything[version - 1].recorded.position
    moment = everything[1500].recorded.event.timestamp
    at_moment = state_at(log, long_stream, at=moment)
    assert at_moment is not None and at_moment.state == everything[1500].state


def test_an_audit_replays_from_the_first_event_not_from_a_snapshot(
    log: EventLog, database: Database, ledger: Ledger, long_stream: str
) -> None:
    project_once(database, ledger)
    bogus = snapshots.encode(fold(r.event for r in log.user_events(long_stream)[:5]))
    rows(database, "UPDATE ledger_snapshots SET state = %s", (bogus,))
    result = audit(database, ledger, long_stream)
    assert result is not None and result.consistent
    assert result.replayed is not None and result.replayed["version"] == 2501
