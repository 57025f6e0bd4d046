"""100,000 grants expiring at one instant (a month's promotion, at midnight):
the expiry workers of two projector processes record every one, once, while
the active one is killed with kill -9 mid-way and the other takes over."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from ledger.application import Ledger
from ledger.commands import GrantCredits, RegisterUser
from ledger.db import Database
from ledger.domain import Cause
from tests.helpers import BackgroundWriter, MovableClock, rows, wait_caught_up, wait_until
from tests.reliability.conftest import Report, Servers, assert_projection_is_the_replay

pytestmark = pytest.mark.reliability

USERS = 10_000
GRANTS_EACH = 10
CAUSE = Cause("admin", "key_mass", None, None)


def expired(database: Database) -> tuple[int, int]:
    """CreditsExpired events recorded, and distinct grants among them."""
    (row,) = rows(
        database,
        "SELECT count(*), count(DISTINCT convert_from(state, 'UTF8')::jsonb ->> 'grant_id') "
        "FROM ledger_events WHERE topic LIKE '%%.CreditsExpired'",
    )
    return int(row[0]), int(row[1])


def test_100000_grants_expiring_at_one_instant_are_each_recorded_once_through_a_kill(
    database: Database, ledger: Ledger, servers: Servers, report: Report, tmp_path: Path
) -> None:
    clock = MovableClock(tmp_path / "offset")
    midnight = clock() + timedelta(hours=1)
    writer = BackgroundWriter(ledger, database, clock=clock)
    try:
        users = [f"m{i:05d}" for i in range(USERS)]
        for start in range(0, USERS, 5000):
            chunk = users[start : start + 5000]
            writer.execute_together([(RegisterUser(u), CAUSE) for u in chunk], timeout=None)
            grants = [
                (GrantCredits(u, 1, "promotion", expires_at=midnight), CAUSE)
                for u in chunk
                for _ in range(GRANTS_EACH)
            ]
            writer.execute_together(grants, timeout=None)
    finally:
        writer.stop()

    env = {"LEDGER_CLOCK_OFFSET_FILE": str(clock.path), "LEDGER_LOG_LEVEL": "warning"}
    first = servers.project(database, name="first", **env)
    wait_caught_up(database, timeout=120)
    second = servers.project(database, name="second", **env)

    clock.advance(3601)  # midnight
    started = time.monotonic()
    wait_until(lambda: expired(database)[0] >= USERS * GRANTS_EACH // 3, timeout=120, every=0.01)
    first.kill()  # mid-way: the standby takes over
    first.wait()
    killed_at = expired(database)[0]
    wait_until(lambda: expired(database)[0] >= USERS * GRANTS_EACH, timeout=300, every=0.05)
    seconds = time.monotonic() - started
    time.sleep(1.0)  # anything recorded twice would show by now

    events, grants = expired(database)
    assert (events, grants) == (USERS * GRANTS_EACH, USERS * GRANTS_EACH)
    audit = assert_projection_is_the_replay(database, timeout=120)
    (left,) = rows(database, "SELECT count(*) FROM users WHERE free_credits <> 10")
    assert left == (0,)
    assert second.poll() is None
    report(
        "100,000 grants expiring at one instant",
        users=USERS,
        grants=events,
        expired_before_kill=killed_at,
        seconds=round(seconds, 1),
        grants_per_second=round(events / seconds),
        audit_mismatches=len(audit.mismatches),
    )
