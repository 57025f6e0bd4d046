"""Holds under fire: placements and spends racing on one user through two
servers never reserve more than there is, and holds expiring while the
projector process (which runs the expiry worker) is killed again and again are
each recorded once."""

from __future__ import annotations

import random
import time
from collections import Counter

import psutil
import pytest

from ledger.db import Database
from tests.helpers import rows, wait_until
from tests.reliability.conftest import (
    Call,
    Report,
    Servers,
    assert_projection_is_the_replay,
    projector_child,
    registrations,
    send_calls,
)

pytestmark = pytest.mark.reliability


def closing_events(database: Database) -> dict[str, list[str]]:
    """Each hold id, and the types of the events that closed it."""
    closed: dict[str, list[str]] = {}
    for hold_id, topic in rows(
        database,
        "SELECT convert_from(state, 'UTF8')::jsonb ->> 'hold_id', topic FROM ledger_events "
        "WHERE topic LIKE '%%.Hold%%' AND topic NOT LIKE '%%HoldPlaced'",
    ):
        closed.setdefault(hold_id, []).append(topic.rpartition(".")[2])
    return closed


def test_100_placements_and_spends_racing_on_one_user_never_over_reserve(
    database: Database, servers: Servers, report: Report
) -> None:
    first = servers.serve(database, name="first")
    second = servers.serve(database, name="second", args=["--no-projector"])
    user = "racer"
    (registered,) = send_calls([first.url], registrations([user]))
    (granted,) = send_calls([first.url], [Call("race-grant", "grant_credits", user, 140)])
    assert (registered.status, granted.status) == (201, 201)
    balance = 150
    rng = random.Random(5)
    calls = [
        Call(f"race-{i}", "hold" if i % 2 else "spend_credits", user, rng.randint(1, 3))
        for i in range(100)
    ]

    outcomes = send_calls([first.url, second.url], calls, clients=32)

    accepted = [o for o in outcomes if o.status == 201]
    refused = [o for o in outcomes if o.problem == "insufficient-balance"]
    assert len(accepted) + len(refused) == len(calls), Counter(o.status for o in outcomes)
    taken = sum(o.call.amount for o in accepted)
    assert taken <= balance  # held or spent, never more than there is
    for outcome in accepted:
        assert outcome.user["free_credits"] >= 0 and outcome.user["free_credits_held"] >= 0
        assert outcome.user["free_credits"] + outcome.user["free_credits_held"] <= balance
    assert refused and balance - taken < 3  # what was refused could not have fitted
    audit = assert_projection_is_the_replay(database)
    (held,) = rows(
        database, "SELECT free_credits, free_credits_held FROM users WHERE id = %s", (user,)
    )
    spent = sum(o.call.amount for o in accepted if o.call.kind != "hold")
    assert held[0] + held[1] == balance - spent
    report(
        "holds and spends racing on one user",
        servers=2,
        calls=len(calls),
        accepted=len(accepted),
        refused=len(refused),
        taken=taken,
        audit_mismatches=len(audit.mismatches),
    )


def test_holds_expiring_while_the_projector_is_killed_are_each_recorded_once(
    database: Database, servers: Servers, report: Report
) -> None:
    served = servers.serve(database, name="ledger")
    users = [f"expiring{i:03d}" for i in range(100)]
    assert all(o.status == 201 for o in send_calls([served.url], registrations(users)))
    calls = [Call(f"h-{u}-{n}", "hold", u, 1, ttl_seconds=2) for u in users for n in range(3)]
    placed = send_calls([served.url], calls)
    assert all(o.status == 201 for o in placed), Counter(o.status for o in placed)
    hold_ids = {o.body["hold"]["id"] for o in placed}

    kills = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = closing_events(database)
        if len(done) == len(hold_ids):
            break
        if kills < 4:
            time.sleep(0.7)
            try:
                projector_child(served).kill()  # the expiry worker with it
                kills += 1
            except psutil.Error:
                pass
        time.sleep(0.2)

    wait_until(lambda: len(closing_events(database)) == len(hold_ids), timeout=60)
    closed = closing_events(database)
    assert set(closed) == hold_ids
    assert all(kinds == ["HoldExpired"] for kinds in closed.values()), [
        (h, k) for h, k in closed.items() if k != ["HoldExpired"]
    ][:5]
    audit = assert_projection_is_the_replay(database)
    left = rows(database, "SELECT count(*) FROM users WHERE free_credits_held <> 0")
    assert left == [(0,)]
    report(
        "holds expiring through projector kills",
        holds=len(hold_ids),
        kills=kills,
        closed_once=len(closed),
        audit_mismatches=len(audit.mismatches),
    )
