"""Reads on a read replica (LEDGER_READ_DATABASE_URL): a real streaming replica
of a PostgreSQL of the test's own (pg_basebackup -R, a second postmaster).
Queries of the users table and of history go to it; a read with
`min_position` waits until the replica too has applied the position, so it is
never stale past it; a replica that stops replaying is waited for, then a 504;
a replica that is down sends reads to the primary."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.bootstrap import init_database
from tests.e2e.conftest import Api
from tests.helpers import ServedLedger, wait_until
from tests.postgres import PrivatePostgres, Replica, server_home


@pytest.fixture(scope="module")
def homes() -> Iterator[Path]:
    home = server_home("replication")
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def primary(homes: Path) -> Iterator[PrivatePostgres]:
    postgres = PrivatePostgres(homes / "primary")
    init_database(postgres.database)
    yield postgres
    postgres.close()


@pytest.fixture(scope="module")
def replica(primary: PrivatePostgres, homes: Path) -> Iterator[Replica]:
    standby = Replica(primary, homes / "standby")
    yield standby
    standby.close()


@pytest.fixture(scope="module")
def api(primary: PrivatePostgres, replica: Replica) -> Iterator[Api]:
    served = ServedLedger(
        primary.database,
        env={
            "LEDGER_READ_DATABASE_URL": replica.database.url,
            "LEDGER_WAIT_TIMEOUT_SECONDS": "1",
        },
    )
    with served:
        client = Api(served)
        client.wait_until_running()
        yield client
        client.close()


def test_a_read_with_min_position_is_never_staler_than_the_position(
    api: Api, replica: Replica
) -> None:
    user_id = api.registered("replicated")
    spent = api.check_command(api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 3}))

    read = api.user(user_id, at_least=spent["event"]["position"])

    assert read["free_credits"] == 7


def test_reads_come_from_the_replica_and_wait_for_it_when_it_falls_behind(
    api: Api, replica: Replica
) -> None:
    user_id = api.registered("lagging")
    replica.pause_replay()  # the replica falls behind from here
    try:
        spent = api.check_command(api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 4}))
        position = spent["event"]["position"]

        stale = api.json(api.get(f"/v1/users/{user_id}"))  # no position asked for
        waited = api.get(f"/v1/users/{user_id}", params={"min_position": position})
        history = api.json(api.get(f"/v1/users/{user_id}/events"))

        assert stale["free_credits"] == 10  # the replica's, before the spend
        api.problem(waited, 504, "projection-timeout")
        assert [e["type"] for e in history["items"]] == ["UserRegistered"]
    finally:
        replica.resume_replay()

    caught_up = api.user(user_id, at_least=position)
    assert caught_up["free_credits"] == 6


def test_a_replica_that_is_down_sends_reads_to_the_primary(api: Api, replica: Replica) -> None:
    user_id = api.registered("fallback")
    replica.stop()
    try:
        spent = api.check_command(api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 1}))
        read = api.user(user_id, at_least=spent["event"]["position"])
        history = api.json(api.get(f"/v1/users/{user_id}/events"))
        holds = api.json(api.get(f"/v1/users/{user_id}/holds"))
    finally:
        replica.start()

    assert read["free_credits"] == 9
    assert [e["type"] for e in history["items"]] == ["UserRegistered", "CreditsSpent"]
    assert holds == {"items": [], "next": None}
    wait_until(lambda: api.get(f"/v1/users/{user_id}").status_code == 200, timeout=30)
