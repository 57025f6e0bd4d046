"""A kill -9 of `ledger serve` in the middle of a load loses nothing that was
acknowledged, and applies nothing twice."""

from __future__ import annotations

import random
import signal
import time

import pytest

from ledger.db import Database
from tests.helpers import head
from tests.reliability.conftest import (
    Load,
    Report,
    Servers,
    assert_acknowledged_are_recorded,
    assert_answers_add_up,
    assert_each_key_recorded_once,
    assert_projection_is_the_replay,
    assert_store_is_exactly_the_acknowledged,
    final_answers,
    mixed_call,
    registrations,
    send_calls,
    settle,
)

pytestmark = pytest.mark.reliability

USERS = [f"user{i:03d}" for i in range(300)]
CLIENTS = 16


def test_a_server_killed_mid_load_loses_nothing_acknowledged(
    database: Database, servers: Servers, report: Report
) -> None:
    served = servers.serve(database)
    registered = send_calls([served.url], registrations(USERS), CLIENTS)
    assert all(o.status == 201 for o in registered)

    # 16 clients spend and grant over 300 users; at a random moment, kill -9.
    rng = random.Random(7)
    kill_after = rng.randint(1200, 2000)
    with Load([served.url], lambda r, key: mixed_call(r, key, USERS), clients=CLIENTS) as load:
        load.wait_for_acknowledged(kill_after)
        served.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        time.sleep(0.5)  # the clients keep trying, and fail
    before = load.outcomes
    acknowledged_before = sum(o.acknowledged for o in before)
    unanswered = [o for o in before if o.unknown]
    in_flight = [o for o in unanswered if o.started < killed_at]
    assert in_flight, "the kill landed between requests; nothing was in flight"
    assert all(o.status is None for o in unanswered), "only a dead server leaves no answer"

    # Restart it on the same database and port; the clients carry on.
    served.start()
    with Load(
        [served.url], lambda r, key: mixed_call(r, key, USERS), clients=CLIENTS, prefix="after"
    ) as load:
        load.wait_for_acknowledged(800)
    after = load.outcomes
    assert all(not o.unknown for o in after), "the restarted server left a call unanswered"

    # Each client sends what it got no answer to again, under the same key.
    retried = settle([served.url], [o.call for o in unanswered])
    everything = [*registered, *before, *after, *retried]
    answers = final_answers(everything)
    assert set(answers) == {o.call.key for o in everything}

    checked = assert_acknowledged_are_recorded(database, everything)
    assert_each_key_recorded_once(database)
    events = assert_store_is_exactly_the_acknowledged(database, everything)
    users = assert_answers_add_up(everything)
    audit = assert_projection_is_the_replay(database)
    assert audit.users_checked == len(USERS)
    # Positions the killed server's last transaction took, and never committed.
    holes = head(database) - events

    lost_acks = sum(o.replayed for o in retried)
    report(
        "server kill -9 mid-load",
        clients=CLIENTS,
        users=users,
        commands_answered=len(answers),
        acknowledged=sum(o.acknowledged for o in answers.values()),
        refused=sum(not o.acknowledged for o in answers.values()),
        acknowledged_before_kill=acknowledged_before,
        in_flight_at_kill=len(in_flight),
        refused_connections=len(unanswered) - len(in_flight),
        committed_but_unanswered=lost_acks,
        acknowledgements_checked=checked,
        events=events,
        sequence_holes=holes,
        audit_users=audit.users_checked,
        audit_mismatches=len(audit.mismatches),
        seconds_since_kill=round(time.monotonic() - killed_at, 1),
    )
