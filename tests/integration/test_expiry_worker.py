"""The expiry worker's view of a users table that lags the writer: a user it
has just caught up is not looked at again until the projector has applied what
was recorded, and a row that says a user is due when nothing is costs one look,
not a loop, until the user's next instant comes. The worker's steps are driven
one by one, on real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from ledger.application import Ledger
from ledger.commands import GrantCredits, RegisterUser
from ledger.db import Database
from ledger.domain import Cause
from projections.expiry import ExpiryWorker
from tests.helpers import BackgroundWriter, MovableClock, project_once, rows

CAUSE = Cause("service", "key_expiry", None, None)
USERS = 30


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock(frozen=True)


@pytest.fixture
def worker(database: Database, ledger: Ledger, clock: MovableClock) -> Iterator[ExpiryWorker]:
    worker = ExpiryWorker(database, ledger, clock=clock, batch_size=USERS * 2)
    with database.connect() as conn:
        worker.on_lead(conn)
    yield worker
    worker.stop()


def step(worker: ExpiryWorker, database: Database) -> None:
    with database.connect() as conn:
        worker.work(conn)


def expired(database: Database) -> int:
    (count,) = rows(database, "SELECT count(*) FROM ledger_events WHERE topic ~ 'Expired$'")[0]
    return int(count)


def grant_expiring(database: Database, ledger: Ledger, clock: MovableClock) -> None:
    writer = BackgroundWriter(ledger, database, clock=clock)
    try:
        users = [f"lag{i}" for i in range(USERS)]
        writer.execute_together([(RegisterUser(u), CAUSE) for u in users])
        instant = clock() + timedelta(seconds=10)
        writer.execute_together(
            [(GrantCredits(u, 5, "promotion", expires_at=instant), CAUSE) for u in users]
        )
    finally:
        writer.stop()
    project_once(database, ledger)


def test_a_user_just_caught_up_waits_for_the_projector_before_another_look(
    database: Database, ledger: Ledger, clock: MovableClock, worker: ExpiryWorker
) -> None:
    grant_expiring(database, ledger, clock)
    clock.advance(11)
    step(worker, database)
    assert (worker.recorded, worker.looked_in_vain) == (USERS, 0)

    # The projector has not applied the expiries: every row still says due.
    for _ in range(3):
        step(worker, database)
    assert (worker.recorded, worker.looked_in_vain) == (USERS, 0)

    project_once(database, ledger)
    step(worker, database)
    assert (worker.recorded, worker.looked_in_vain, expired(database)) == (USERS, 0, USERS)


def test_a_row_that_says_due_when_nothing_is_costs_one_look(
    database: Database, ledger: Ledger, clock: MovableClock, worker: ExpiryWorker
) -> None:
    grant_expiring(database, ledger, clock)
    with database.connect() as conn:  # a row edited by hand
        conn.execute("UPDATE users SET next_due_at = now() - interval '1 day' WHERE id = 'lag0'")
    for _ in range(4):
        step(worker, database)
    assert (worker.recorded, worker.looked_in_vain) == (0, 1)

    # Its grant's instant comes: the row has not changed, but the writer said
    # when the user is due next, so the worker looks again then.
    clock.advance(11)
    step(worker, database)
    assert (worker.recorded, worker.looked_in_vain) == (USERS, 1)
    project_once(database, ledger)
    step(worker, database)
    assert (worker.recorded, worker.looked_in_vain, expired(database)) == (USERS, 1, USERS)
