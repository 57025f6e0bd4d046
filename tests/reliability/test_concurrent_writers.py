"""Many writers in many processes at once, against two servers on one database:
the log stays in order with nothing skipped, the projection applies each event
once, and no balance is ever overdrawn however the spends race."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter

import httpx
import pytest

from ledger.db import Database
from tests.helpers import ledger_process, projection_position, rows
from tests.reliability.conftest import (
    Call,
    Job,
    Report,
    Servers,
    ask,
    assert_acknowledged_are_recorded,
    assert_answers_add_up,
    assert_each_key_recorded_once,
    assert_projection_is_the_replay,
    assert_store_is_exactly_the_acknowledged,
    auth,
    registrations,
    run_client_processes,
    send_calls,
    stored_events,
)

pytestmark = pytest.mark.reliability

USERS = tuple(f"user{i:03d}" for i in range(200))
PROCESSES = 4
WRITERS_PER_PROCESS = 16
SECONDS = 30.0


class Tail(threading.Thread):
    """A reader following the global log (GET /v1/events?after=...), as a
    downstream consumer would: each page must continue strictly after the last
    position it saw."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.positions: list[int] = []
        self.pages = 0
        self.problems: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers=auth("admin"), timeout=15) as client:
            while True:
                stopping = self.done.is_set()
                after = self.positions[-1] if self.positions else 0
                response = client.get("/v1/events", params={"after": after, "limit": 1000})
                if response.status_code != 200:
                    self.problems.append(f"{response.status_code}: {response.text[:200]}")
                    return
                page = [item["position"] for item in response.json()["items"]]
                self.pages += 1
                if any(p <= q for p, q in zip(page, [after, *page], strict=False)):
                    self.problems.append(f"after {after}: {page[:10]}...")
                self.positions.extend(page)
                if stopping and not page:
                    return
                if len(page) < 1000:
                    time.sleep(0.02)

    def stop(self) -> None:
        self.done.set()
        self.join(60)


class Watch(threading.Thread):
    """The projection's position, every 50 ms."""

    def __init__(self, database: Database) -> None:
        super().__init__(daemon=True)
        self.database = database
        self.positions: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.positions.append(projection_position(self.database))

    def stop(self) -> None:
        self.done.set()
        self.join(10)


def test_64_writers_in_4_processes_leave_an_ordered_log_applied_once(
    database: Database, servers: Servers, report: Report
) -> None:
    a = servers.serve(database, name="serve-a")
    b = servers.serve(database, name="serve-b")
    registered = send_calls([a.url, b.url], registrations(USERS))
    assert all(o.status == 201 for o in registered)

    tail, watch = Tail(a.url), Watch(database)
    tail.start()
    watch.start()
    jobs = [
        Job(
            urls=(a.url, b.url),
            clients=WRITERS_PER_PROCESS,
            seconds=SECONDS,
            user_ids=USERS,
            prefix=f"p{n}",
            seed=n,
        )
        for n in range(PROCESSES)
    ]
    started = time.monotonic()
    outcomes = run_client_processes(jobs)
    elapsed = time.monotonic() - started
    tail.stop()
    watch.stop()

    # Every command was answered, none with a server error.
    statuses = Counter(o.status for o in outcomes)
    assert None not in statuses, [o.error for o in outcomes if o.status is None][:5]
    assert all(status is not None and status < 500 for status in statuses), statuses
    everything = [*registered, *outcomes]

    # The tailing reader: positions strictly increasing (checked page by page),
    # and in the end exactly the store's positions, so it passed over nothing
    # that committed later. Positions come from a sequence, which leaves a hole
    # only where a transaction that took a number rolled back; here none did
    # (no command failed), so there are no holes either.
    assert tail.problems == []
    stored = sorted(stored_events(database))
    assert tail.positions == stored
    holes = set(range(1, stored[-1] + 1)) - set(stored)
    assert holes == set()

    checked = assert_acknowledged_are_recorded(database, everything)
    assert_each_key_recorded_once(database)
    events = assert_store_is_exactly_the_acknowledged(database, everything)
    assert_answers_add_up(everything)

    # The projector only moves forward, and ends equal to the replay.
    assert watch.positions == sorted(watch.positions)
    audit = assert_projection_is_the_replay(database)

    # Every event is chained, in position order, once: the writers of two
    # servers never forked the chain.
    links = rows(database, "SELECT position FROM ledger_chain ORDER BY position")
    assert [p for (p,) in links] == stored
    verified = ledger_process("verify", "--json", database=database, stdout=subprocess.PIPE)
    out, _ = verified.communicate(timeout=120)
    assert verified.returncode == 0 and json.loads(out)["checked"] == len(stored), out

    acknowledged = sum(o.acknowledged for o in outcomes)
    report(
        "64 concurrent writers",
        processes=PROCESSES,
        writers=PROCESSES * WRITERS_PER_PROCESS,
        seconds=round(elapsed, 1),
        commands=len(outcomes),
        acknowledged=acknowledged,
        refused=len(outcomes) - acknowledged,
        per_second=round(len(outcomes) / elapsed),
        slowest_answer_s=round(max(o.seconds for o in outcomes), 2),
        tail_pages=tail.pages,
        tail_positions=len(tail.positions),
        holes=len(holes),
        acknowledgements_checked=checked,
        events=events,
        projection_samples=len(watch.positions),
        audit_mismatches=len(audit.mismatches),
    )


SPENDS = 200
BALANCE = 100


def test_200_racing_spends_never_overdraw_and_exactly_the_balance_succeeds(
    database: Database, servers: Servers, report: Report
) -> None:
    a = servers.serve(database, name="serve-a")
    b = servers.serve(database, name="serve-b")
    assert ask(a.url, "POST", "/v1/users", body={"id": "alice"}).status == 201
    grant = ask(a.url, "POST", "/v1/users/alice/credits/grants", body={"amount": BALANCE - 10})
    assert grant.status == 201
    assert grant.body["user"]["free_credits"] == BALANCE

    # 200 spends of one credit, from 4 processes at the same moment, through both servers.
    spends = [Call(f"spend-{n}", "spend_credits", "alice", 1) for n in range(SPENDS)]
    share = SPENDS // PROCESSES
    jobs = [
        Job(
            urls=((a.url, b.url)[n % 2],),
            clients=share,
            calls=tuple(spends[n * share : (n + 1) * share]),
        )
        for n in range(PROCESSES)
    ]
    outcomes = run_client_processes(jobs)

    statuses = Counter(o.status for o in outcomes)
    assert statuses == {201: BALANCE, 409: SPENDS - BALANCE}, statuses
    assert {o.problem for o in outcomes if o.status == 409} == {"insufficient-balance"}
    told = sorted(o.user["free_credits"] for o in outcomes if o.acknowledged)
    assert told == list(range(BALANCE)), "each success leaves one credit fewer, down to 0"

    # The history: every balance after every event is at least 0.
    history = ask(a.url, "GET", "/v1/users/alice/events?limit=1000", role="reader").body["items"]
    assert min(item["user"]["free_credits"] for item in history) == 0
    spent = [e for e in stored_events(database).values() if e.type == "CreditsSpent"]
    assert len(spent) == BALANCE

    # The projection, as both servers show it.
    last = max(o.event["position"] for o in outcomes if o.acknowledged)
    for url in (a.url, b.url):
        user = ask(url, "GET", f"/v1/users/alice?min_position={last}", role="reader").body
        assert user["free_credits"] == 0
    assert rows(database, "SELECT free_credits FROM users WHERE id = 'alice'") == [(0,)]
    audit = assert_projection_is_the_replay(database)

    report(
        "overdraft under fire",
        processes=PROCESSES,
        servers=2,
        spends=SPENDS,
        balance=BALANCE,
        succeeded=statuses[201],
        refused_insufficient=statuses[409],
        lowest_balance_told=told[0],
        lowest_balance_in_history=min(item["user"]["free_credits"] for item in history),
        spent_events=len(spent),
        projected_credits=0,
        audit_mismatches=len(audit.mismatches),
    )


KEYS = 50


def test_one_key_sent_at_once_through_two_servers_is_recorded_once(
    database: Database, servers: Servers, report: Report
) -> None:
    a = servers.serve(database, name="serve-a")
    b = servers.serve(database, name="serve-b")
    assert ask(a.url, "POST", "/v1/users", body={"id": "bob"}).status == 201

    # 50 grants, each sent at the same moment by 4 processes, 2 through each server:
    # a client and its retries, racing one another.
    grants = tuple(Call(f"grant-{n}", "grant_credits", "bob", 1) for n in range(KEYS))
    jobs = [Job(urls=((a.url, b.url)[n % 2],), clients=KEYS, calls=grants) for n in range(4)]
    outcomes = run_client_processes(jobs)

    statuses = Counter(o.status for o in outcomes)
    assert set(statuses) <= {201, 409}, statuses
    assert {o.problem for o in outcomes if o.status == 409} <= {"idempotency-key-in-use"}
    answered: dict[str, set[tuple[str, int]]] = {}
    for o in outcomes:
        if o.acknowledged:
            answered.setdefault(o.call.key, set()).add((o.event["id"], o.event["position"]))
    assert len(answered) == KEYS, "every key got its event"
    assert all(len(events) == 1 for events in answered.values()), "one event per key"
    granted = [e for e in stored_events(database).values() if e.type == "CreditsGranted"]
    assert len(granted) == KEYS
    assert_each_key_recorded_once(database)
    last = max(position for events in answered.values() for _, position in events)
    user = ask(b.url, "GET", f"/v1/users/bob?min_position={last}", role="reader").body
    assert user["free_credits"] == 10 + KEYS

    report(
        "one key through two servers at once",
        keys=KEYS,
        sends=len(outcomes),
        recorded=sum(o.acknowledged and not o.replayed for o in outcomes),
        replayed=sum(o.replayed for o in outcomes),
        in_use_409=statuses[409],
        events=len(granted),
        credits=user["free_credits"],
    )
