"""The projector killed at random moments, inside its batches and between them,
again and again while commands flow: every crash leaves the users table
consistent with the history up to its own position, and once a projector runs
to the end, the table equals a replay of everything."""

from __future__ import annotations

import contextlib
import random
import time
from functools import partial

import pytest

from ledger.application import Ledger
from ledger.db import Database
from projections import status as st
from projections.audit import audit_all
from tests.helpers import head, projection_position, rows, wait_until
from tests.reliability.conftest import (
    Load,
    Report,
    Servers,
    ask,
    assert_acknowledged_are_recorded,
    assert_each_key_recorded_once,
    assert_projection_is_the_replay,
    mixed_call,
    projector_child,
    projector_holders,
    registrations,
    send_calls,
)

pytestmark = pytest.mark.reliability

USERS = [f"user{i:03d}" for i in range(200)]
KILLS = 10


def is_active(database: Database, name: str) -> bool:
    return projector_holders(database) == [name]


def batch_open(database: Database, name: str) -> bool:
    """Whether the active projector `name` is inside a batch's transaction now."""
    key = st.leader_lock("users")
    found = rows(
        database,
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND l.objid = (%s::bigint & 4294967295)::oid AND a.application_name = %s "
        "AND a.datname = current_database() AND a.xact_start IS NOT NULL",
        (key, name),
    )
    return bool(found[0][0])


def test_a_projector_killed_again_and_again_ends_equal_to_the_replay(
    database: Database, servers: Servers, ledger: Ledger, report: Report
) -> None:
    # The API alone; its projector runs apart (`ledger project`), to be killed.
    served = servers.serve(database, args=["--no-projector"])
    assert all(o.status == 201 for o in send_calls([served.url], registrations(USERS)))

    rng = random.Random(11)
    kills_mid_batch = 0
    positions: list[int] = []
    with Load([served.url], lambda r, key: mixed_call(r, key, USERS), clients=8) as load:
        for attempt in range(KILLS):
            name = f"projector-{attempt}"
            child = servers.project(database, name=name, LEDGER_PROJECTOR_BATCH_SIZE="100")
            wait_until(partial(is_active, database, name), timeout=30)
            if attempt % 2:
                time.sleep(rng.uniform(0.0, 0.5))  # any moment
                mid_batch = batch_open(database, name)
            else:
                # The moment it is seen inside a batch's transaction.
                wait_until(partial(batch_open, database, name), timeout=10, every=0.001)
                mid_batch = True
            child.kill()
            child.wait()
            kills_mid_batch += mid_batch

            # What the crash left: consistent with the history up to its position.
            position = projection_position(database)
            audit = audit_all(database, ledger)
            assert audit.consistent, [m.as_dict() for m in audit.mismatches[:3]]
            assert audit.position == position
            positions.append(position)
        lag_at_last_kill = head(database) - positions[-1]

    acknowledged = assert_acknowledged_are_recorded(database, load.outcomes)
    assert_each_key_recorded_once(database)
    assert positions == sorted(positions), "the projection went backwards"
    assert positions[-1] > 0

    # One more projector, left to run: it catches up and equals the replay.
    servers.project(database, name="projector-last")
    audit = assert_projection_is_the_replay(database)

    report(
        "projector killed again and again",
        kills=KILLS,
        kills_inside_a_batch=kills_mid_batch,
        positions_at_kills=",".join(map(str, positions)),
        lag_at_last_kill=lag_at_last_kill,
        commands_acknowledged=acknowledged,
        events=head(database),
        audit_users=audit.users_checked,
        audit_mismatches=len(audit.mismatches),
    )
    assert kills_mid_batch >= KILLS // 2


def test_the_projector_of_ledger_serve_killed_alone_is_replaced(
    database: Database, servers: Servers, report: Report
) -> None:
    served = servers.serve(database, name="serve", LEDGER_WAIT_TIMEOUT_SECONDS="2")
    wait_until(lambda: projector_holders(database) == ["serve"], timeout=30)

    # The projector process alone is killed, as the OOM killer would; the API lives on.
    projector_child(served).kill()
    created = ask(served.url, "POST", "/v1/users", body={"id": "after-the-kill"})
    assert created.status == 201
    position = created.body["event"]["position"]

    def projecting() -> bool:
        return projector_holders(database) != [] and projection_position(database) >= position

    with contextlib.suppress(AssertionError):
        wait_until(projecting, timeout=10)
    read = ask(served.url, "GET", f"/v1/users/after-the-kill?min_position={position}")
    (item,) = ask(served.url, "GET", "/v1/projections", role="reader").body["items"]

    report(
        "projector of ledger serve killed alone",
        api_alive=served.process is not None and served.process.poll() is None,
        projectors_active=len(projector_holders(database)),
        read_your_write=read.status,
        projection_status=item["status"],
        projection_lag=item["lag"],
    )
    assert read.status == 200
    assert projector_holders(database) != []
