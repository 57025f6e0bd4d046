"""Several `ledger serve` processes and a `ledger project` on one database:
exactly one projector is active at any moment; when the active one is killed,
another takes over within seconds, and the projection keeps up."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from functools import partial

import pytest

from ledger.db import Database
from tests.helpers import ServedLedger, head, projection_position, wait_caught_up, wait_until
from tests.reliability.conftest import (
    Load,
    Report,
    Servers,
    ask,
    assert_acknowledged_are_recorded,
    assert_each_key_recorded_once,
    assert_projection_is_the_replay,
    assert_store_is_exactly_the_acknowledged,
    final_answers,
    mixed_call,
    projector_holders,
    registrations,
    send_calls,
    settle,
)

pytestmark = pytest.mark.reliability

USERS = [f"user{i:03d}" for i in range(200)]
HANDOVERS = 2
#: "Within seconds": from the kill to another projector holding the lock.
HANDOVER_WITHIN = 10.0


def taken_over(database: Database, killed: str) -> bool:
    """Whether another projector than `killed` is the active one now."""
    return projector_holders(database) not in ([], [killed])


class Sampler(threading.Thread):
    """Who holds the projector's leader lock, every 50 ms."""

    def __init__(self, database: Database) -> None:
        super().__init__(daemon=True)
        self.database = database
        self.samples: list[tuple[float, list[str]]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.samples.append((time.monotonic(), projector_holders(self.database)))

    def stop(self) -> None:
        self.done.set()
        self.join(10)


def test_one_projector_is_active_and_a_killed_one_hands_over(
    database: Database, servers: Servers, report: Report
) -> None:
    a = servers.serve(database, name="serve-a")
    b = servers.serve(database, name="serve-b")
    processes: dict[str, ServedLedger | subprocess.Popen[bytes]] = {
        "serve-a": a,
        "serve-b": b,
        "project-c": servers.project(database, name="project-c"),
    }
    urls = [a.url, b.url]
    registered = send_calls(urls, registrations(USERS))
    assert all(o.status == 201 for o in registered)

    sampler = Sampler(database)
    handovers: list[tuple[str, str, float]] = []
    kills: list[float] = []
    lags: list[int] = []
    with Load(urls, lambda r, key: mixed_call(r, key, USERS), clients=8) as load:
        wait_until(lambda: len(projector_holders(database)) == 1, timeout=30)
        sampler.start()
        time.sleep(2.0)
        for _ in range(HANDOVERS):
            (active,) = projector_holders(database)
            process = processes[active]
            if isinstance(process, ServedLedger):
                process.stop(signal.SIGKILL)  # the whole server, as a crash
            else:
                process.kill()
                process.wait()
            killed = time.monotonic()
            kills.append(killed)
            wait_until(partial(taken_over, database, active), timeout=HANDOVER_WITHIN, every=0.02)
            (successor,) = projector_holders(database)
            handovers.append((active, successor, time.monotonic() - killed))

            # The successor keeps up with the commands still arriving.
            wait_caught_up(database, timeout=15)
            position = projection_position(database)
            lags.append(head(database) - position)

            # The killed one comes back, and stands by.
            if isinstance(process, ServedLedger):
                process.start()
            else:
                processes[active] = servers.project(database, name=active)
            time.sleep(2.0)
            assert projector_holders(database) == [successor]
    sampler.stop()

    # Exactly one holder in every sample, but in the moments after each kill.
    counts = [len(holders) for _, holders in sampler.samples]
    assert max(counts) == 1
    outside_handovers = [
        len(holders)
        for at, holders in sampler.samples
        if not any(0 <= at - kill <= HANDOVER_WITHIN for kill in kills)
    ]
    assert set(outside_handovers) == {1}

    # Both servers tell their users the same: the projection is caught up. (Not
    # its status: see test_a_database_without_a_projector_is_reported_stopped.)
    wait_caught_up(database)
    statuses = []
    for url in urls:
        (item,) = ask(url, "GET", "/v1/projections", role="reader").body["items"]
        assert item["lag"] == 0
        statuses.append(item["status"])

    # Calls cut off by a killed server are sent again, to either.
    unanswered = [o.call for o in load.outcomes if o.unknown]
    retried = settle(urls, unanswered)
    everything = [*registered, *load.outcomes, *retried]
    answers = final_answers(everything)
    checked = assert_acknowledged_are_recorded(database, everything)
    assert_each_key_recorded_once(database)
    events = assert_store_is_exactly_the_acknowledged(database, everything)
    audit = assert_projection_is_the_replay(database)

    report(
        "several servers on one database",
        processes=",".join(processes),
        handovers=";".join(f"{old}->{new} in {s:.2f}s" for old, new, s in handovers),
        lock_samples=len(counts),
        samples_with_one_holder=counts.count(1),
        samples_with_none=counts.count(0),
        samples_with_two_or_more=sum(c > 1 for c in counts),
        lag_after_handover=",".join(map(str, lags)),
        status_shown=",".join(statuses),
        unanswered_retried=len(unanswered),
        acknowledged=sum(o.acknowledged for o in answers.values()),
        acknowledgements_checked=checked,
        events=events,
        audit_mismatches=len(audit.mismatches),
    )


def test_a_database_without_a_projector_is_reported_stopped(
    database: Database, other_database: Database, servers: Servers, report: Report
) -> None:
    # This database is served without a projector; another on the same server has one.
    served = servers.serve(database, args=["--no-projector"])
    servers.project(other_database, name="elsewhere")
    wait_until(lambda: projector_holders(other_database) == ["elsewhere"], timeout=30)
    assert projector_holders(database) == []

    (item,) = ask(served.url, "GET", "/v1/projections", role="reader").body["items"]
    ready = ask(served.url, "GET", "/readyz", role=None)

    report(
        "projection status with no projector",
        holders_here=len(projector_holders(database)),
        holders_elsewhere=len(projector_holders(other_database)),
        status_reported=item["status"],
        readyz_projection=ready.body.get("projection"),
    )
    assert item["status"] == "stopped"
