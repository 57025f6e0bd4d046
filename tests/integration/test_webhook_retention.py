"""Webhook messages past the retention, on real PostgreSQL: the active outbox
deletes those done (succeeded or failed) with their attempts once their event
is older than LEDGER_WEBHOOKS_RETENTION_DAYS, keeps pending and recent ones,
and /metrics goes on counting what it deleted. Time is a clock the test moves."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from api.http.routers.health import webhook_figures
from api.settings import Settings
from api.webhook_worker import webhooks
from ledger.application import Ledger
from ledger.db import Database
from projections.webhooks.outbox import Outbox
from tests.helpers import MovableClock, rows, wait_until
from tests.webhook_receiver import add_endpoint

RETENTION = timedelta(days=30)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock(frozen=True)


@pytest.fixture
def outbox(database: Database, ledger: Ledger, clock: MovableClock) -> Iterator[Outbox]:
    running = Outbox(
        database, ledger, poll_interval=0.05, clock=clock, retention=RETENTION, prune_batch=2
    )
    running.start()
    yield running
    running.stop()


def add_message(database: Database, endpoint_id: str, status: str, event_at: datetime) -> str:
    """A message as the outbox and a sender leave it, with one attempt."""
    count = rows(database, "SELECT count(*) FROM ledger_webhook_messages")[0][0]
    message_id = f"msg_{status}_{count}"
    rows(
        database,
        "INSERT INTO ledger_webhook_messages (id, endpoint_id, user_id, position, type, body, "
        "status, next_attempt_at, event_at, attempts, delivered_at) "
        "VALUES (%s, %s, 'u', %s, 'credits.spent', '{}', %s, %s, %s, 1, %s)",
        (
            message_id,
            endpoint_id,
            count + 1,
            status,
            event_at,
            event_at,
            event_at if status == "succeeded" else None,
        ),
    )
    rows(
        database,
        "INSERT INTO ledger_webhook_attempts (message_id, attempt, attempted_at, http_status, "
        "duration_ms) VALUES (%s, 1, %s, %s, 1.0)",
        (message_id, event_at, 200 if status == "succeeded" else 500),
    )
    return message_id


def by_status(database: Database, now: datetime) -> dict[str, int]:
    with database.connect() as conn:
        return webhook_figures(conn, now).by_status


def test_messages_done_past_the_retention_are_deleted_with_their_attempts(
    database: Database, clock: MovableClock, outbox: Outbox
) -> None:
    endpoint_id = add_endpoint(database, "https://93.184.215.14/hooks", id="ep_kept")["id"]
    old_done = [add_message(database, endpoint_id, s, clock()) for s in ["succeeded"] * 3]
    old_done += [add_message(database, endpoint_id, "failed", clock()) for _ in range(2)]
    old_pending = [add_message(database, endpoint_id, "pending", clock()) for _ in range(2)]
    before = by_status(database, clock())
    assert before == {"succeeded": 3, "failed": 2, "pending": 2}
    wait_until(lambda: outbox.is_leader)
    time.sleep(0.3)
    assert outbox.pruned == 0  # nothing is old enough yet

    clock.advance(RETENTION.total_seconds() + 3600)
    recent = add_message(database, endpoint_id, "succeeded", clock() - timedelta(days=29))

    wait_until(lambda: outbox.pruned == 5, timeout=10)
    kept = {m for (m,) in rows(database, "SELECT id FROM ledger_webhook_messages")}
    assert kept == {*old_pending, recent}
    tried = {m for (m,) in rows(database, "SELECT message_id FROM ledger_webhook_attempts")}
    assert tried == kept and not tried & set(old_done)
    assert by_status(database, clock()) == {"succeeded": 4, "failed": 2, "pending": 2}
    totals = dict(rows(database, "SELECT status, pruned FROM ledger_webhook_totals"))
    assert totals == {"succeeded": 3, "failed": 2}

    # A pending message is never deleted, however old; once done, it is, in time.
    failed = "UPDATE ledger_webhook_messages SET status = 'failed' WHERE id = %s"
    rows(database, failed, (old_pending[0],))
    time.sleep(0.3)
    assert outbox.pruned == 5  # not looked for again within a minute
    clock.advance(61)
    wait_until(lambda: outbox.pruned == 6, timeout=10)
    assert by_status(database, clock()) == {"succeeded": 4, "failed": 3, "pending": 1}


def test_the_retention_is_a_setting(database: Database, ledger: Ledger, tmp_path: Path) -> None:
    settings = Settings(webhooks_retention_days=7, clock_offset_file=tmp_path / "offset")
    outbox, _ = webhooks(database, ledger, settings)

    assert outbox.retention == timedelta(days=7)
    assert Settings().webhooks_retention_days == 30
