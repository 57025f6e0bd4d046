"""The outbox and the sender in-process, on real PostgreSQL, sending to a real
receiver on 127.0.0.1; time is a clock the tests move (frozen otherwise), so
the retry schedule is walked without sleeping through it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from api.integrations.webhooks import schedule
from api.integrations.webhooks.safety import Policy
from api.integrations.webhooks.sender import Sender
from ledger import events_table
from ledger.application import Ledger
from ledger.commands import RegisterUser
from ledger.db import Database
from ledger.domain import Cause
from projections.webhooks.outbox import TRACKING_NAME, Outbox
from tests.helpers import BackgroundWriter, MovableClock, rows, wait_until
from tests.webhook_receiver import Receiver, add_endpoint

CAUSE = Cause("admin", "key_hooks", "req_hooks", None)
LOCAL = Policy(allow_http=True, allow_private=True)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock(frozen=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def timed_writer(
    ledger: Ledger, database: Database, clock: MovableClock
) -> Iterator[BackgroundWriter]:
    writer = BackgroundWriter(ledger, database, clock=clock)
    yield writer
    writer.stop()


@pytest.fixture
def outbox(database: Database, ledger: Ledger) -> Iterator[Outbox]:
    running = Outbox(database, ledger, poll_interval=0.05)
    running.start()
    yield running
    running.stop()


def sender(database: Database, clock: MovableClock, **options: Any) -> Sender:
    options.setdefault("policy", LOCAL)
    started = Sender(
        database, clock=clock, poll_interval=0.05, jitter=lambda: 0.5, timeout=2, **options
    )
    started.start()
    return started


def message(database: Database) -> dict[str, Any]:
    found = rows(database, "SELECT status, tries, next_attempt_at FROM ledger_webhook_messages")
    if not found:
        return {"status": None, "tries": 0, "next": None, "attempts": []}
    ((status, tries, next_at),) = found
    attempts = rows(
        database,
        "SELECT attempted_at, http_status FROM ledger_webhook_attempts ORDER BY attempt",
    )
    return {"status": status, "tries": tries, "next": next_at, "attempts": attempts}


def test_a_failing_message_is_tried_on_the_schedule_then_fails(
    database: Database,
    clock: MovableClock,
    receiver: Receiver,
    timed_writer: BackgroundWriter,
    outbox: Outbox,
) -> None:
    receiver.answer("/down", lambda _: (500, 0.0))
    add_endpoint(database, receiver.url("/down"))
    timed_writer.execute(RegisterUser("ann"), CAUSE)
    running = sender(database, clock)
    try:
        for tries in range(1, len(schedule.DELAYS) + 1):
            wait_until(lambda: len(message(database)["attempts"]) == tries, timeout=10)  # noqa: B023
            found = message(database)
            if tries == len(schedule.DELAYS):
                break
            delay = timedelta(seconds=schedule.DELAYS[tries])
            assert found["status"] == "pending" and found["tries"] == tries
            assert found["next"] - found["attempts"][-1][0] == delay
            clock.advance(delay.total_seconds() - 1)  # not yet: nothing is sent
            running.wake()
            time.sleep(0.2)
            assert len(message(database)["attempts"]) == tries
            clock.advance(1)
            running.wake()
        wait_until(lambda: message(database)["status"] == "failed", timeout=10)
    finally:
        running.stop()

    found = message(database)
    assert [status for _, status in found["attempts"]] == [500] * 8
    assert len(receiver.at("/down")) == 8 and len({r.id for r in receiver.at("/down")}) == 1


def test_an_endpoint_failing_for_five_days_is_disabled(
    database: Database,
    clock: MovableClock,
    receiver: Receiver,
    timed_writer: BackgroundWriter,
    outbox: Outbox,
) -> None:
    receiver.answer("/down", lambda _: (502, 0.0))
    endpoint = add_endpoint(database, receiver.url("/down"))
    running = sender(database, clock)

    def state() -> tuple[Any, ...]:
        return rows(
            database,
            "SELECT disabled, disabled_reason, failing_since FROM ledger_webhook_endpoints",
        )[0]

    try:
        timed_writer.execute(RegisterUser("ann"), CAUSE)
        wait_until(lambda: state()[2] is not None, timeout=10)
        clock.advance(4 * 86400)
        timed_writer.execute(RegisterUser("bob"), CAUSE)
        wait_until(lambda: len(receiver.at("/down")) >= 2, timeout=10)
        time.sleep(0.2)
        assert state()[0] is False  # four days: still trying
        clock.advance(86400 + 1)
        timed_writer.execute(RegisterUser("cyd"), CAUSE)
        wait_until(lambda: state()[0] is True, timeout=10)
    finally:
        running.stop()

    assert state()[1] == "failing for five days"
    assert endpoint["id"]


def test_a_url_that_resolves_to_a_private_address_is_refused_when_sending(
    database: Database,
    clock: MovableClock,
    receiver: Receiver,
    timed_writer: BackgroundWriter,
    outbox: Outbox,
) -> None:
    add_endpoint(database, receiver.url("/inside"))  # 127.0.0.1, as a rebinding name would
    timed_writer.execute(RegisterUser("ann"), CAUSE)
    running = sender(database, clock, policy=Policy(allow_http=True, allow_private=False))
    try:
        wait_until(lambda: bool(message(database)["attempts"]), timeout=10)
    finally:
        running.stop()

    ((error,),) = rows(database, "SELECT error FROM ledger_webhook_attempts")
    assert "refused" in error and "127.0.0.1" in error
    assert receiver.at("/inside") == []


def test_several_senders_never_send_a_message_twice_at_once(
    database: Database,
    clock: MovableClock,
    receiver: Receiver,
    timed_writer: BackgroundWriter,
    outbox: Outbox,
) -> None:
    receiver.answer("/busy", lambda _: (200, 0.01))
    endpoint = add_endpoint(database, receiver.url("/busy"))
    senders = [sender(database, clock) for _ in range(3)]
    try:
        timed_writer.execute_together([(RegisterUser(f"u{i}"), CAUSE) for i in range(90)])
        wait_until(lambda: len(receiver.at("/busy")) >= 90, timeout=30)
        time.sleep(0.3)
    finally:
        for running in senders:
            running.stop()

    got = receiver.at("/busy")
    assert len(got) == 90 and len({r.id for r in got}) == 90
    assert all(r.verified_by(endpoint["secret"]) for r in got)
    assert sum(1 for s in senders if s.attempts) >= 2, "one sender did all the work"


def test_the_outbox_queues_each_event_once_through_a_handover(
    database: Database, ledger: Ledger, clock: MovableClock, timed_writer: BackgroundWriter
) -> None:
    add_endpoint(database, "https://93.184.215.14/a")
    add_endpoint(database, "https://93.184.215.14/b", event_types=["credits.spent"])
    first = Outbox(database, ledger, poll_interval=0.05, batch_size=10)
    second = Outbox(database, ledger, poll_interval=0.05, batch_size=10)
    first.start()
    second.start()
    try:
        timed_writer.execute_together([(RegisterUser(f"u{i}"), CAUSE) for i in range(50)])
        wait_until(lambda: first.queued + second.queued > 0, timeout=10)
        leader = first if first.is_leader else second
        leader.stop()
        timed_writer.execute_together([(RegisterUser(f"v{i}"), CAUSE) for i in range(50)])
        with database.connect() as conn:
            head = events_table.head(conn)

        def caught_up() -> bool:
            return rows(
                database,
                "SELECT notification_id FROM projection_tracking WHERE application_name = %s",
                (TRACKING_NAME,),
            ) == [(head,)]

        wait_until(caught_up, timeout=15)
    finally:
        first.stop()
        second.stop()

    queued = rows(database, "SELECT endpoint_id, position FROM ledger_webhook_messages")
    assert len(queued) == 100 and len(set(queued)) == 100  # registrations: only /a hears them
