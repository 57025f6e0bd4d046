"""Rebuilding the users projection over HTTP: 202 at once, reads and commands keep
working, and the projection comes back running with the same data.

A ledger of its own: nothing else may rebuild, or write, while it is watched."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from projections import status as st
from projections.rebuild import STAGING_SCHEMA
from tests.helpers import head, rows, wait_until

if TYPE_CHECKING:
    from tests.e2e.conftest import Api


OWN_LEDGER = True


def users_table_oid(api: Api) -> int:
    return int(rows(api.database, "SELECT 'public.users'::regclass::oid")[0][0])


def with_history(api: Api, count: int) -> list[str]:
    """`count` users, each with a few events."""
    ids = [api.new_id("rebuilt") for _ in range(count)]

    def make(user_id: str) -> None:
        api.register(user_id)
        api.check_command(api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 3}))
        api.check_command(api.post(f"/v1/users/{user_id}/chat-messages/grants", {"amount": 7}))
        api.check_command(
            api.put(f"/v1/users/{user_id}/plan", {"level": "paid", "renewal_period": "lifetime"}),
            200,
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(make, ids))
    return ids


@contextlib.contextmanager
def rebuild_held_at_its_start(api: Api) -> Iterator[None]:
    """A rebuild started in the block waits at its first step (it drops the
    staging schema, and a session of the test holds a lock in it) until the
    block ends."""
    with api.database.connect() as setup, api.database.connect(autocommit=False) as holder:
        setup.execute(f"CREATE SCHEMA IF NOT EXISTS {STAGING_SCHEMA}")
        setup.execute(f"CREATE TABLE IF NOT EXISTS {STAGING_SCHEMA}.users (id text)")
        holder.execute(f"LOCK TABLE {STAGING_SCHEMA}.users IN ACCESS SHARE MODE")
        yield
        holder.rollback()


def test_a_rebuild_keeps_serving_and_brings_back_the_same_users(api: Api) -> None:
    ids = with_history(api, 40)
    busy = api.registered("busy")
    api.check_command(api.post(f"/v1/users/{busy}/chat-messages/grants", {"amount": 1_000_000}))
    before = {user_id: api.current(user_id) for user_id in ids}
    table_before = users_table_oid(api)
    assert api.projection()["rebuild"] is None  # never rebuilt

    outcomes: Counter[tuple[str, int]] = Counter()
    stop = threading.Event()

    def keep_using() -> None:
        while not stop.is_set():
            spent = api.post(f"/v1/users/{busy}/chat-messages/spends", {"amount": 1})
            outcomes["spend", spent.status_code] += 1
            read = api.get(f"/v1/users/{ids[0]}")
            outcomes["read", read.status_code] += 1

    user = threading.Thread(target=keep_using)
    user.start()
    try:
        with rebuild_held_at_its_start(api):
            accepted = api.json(api.post("/v1/projections/users/rebuild"), 202)
            wait_until(lambda: api.projection()["status"] == "rebuilding", timeout=30)
            during = api.projection()
            served_while_rebuilding = sum(outcomes.values())
            wait_until(lambda: sum(outcomes.values()) >= served_while_rebuilding + 20, timeout=30)
        wait_until(lambda: rebuilt(api.projection()), timeout=60)
    finally:
        stop.set()
        user.join(30)

    assert accepted["name"] == "users"
    assert {"version", "position", "head", "lag", "status", "error"} <= accepted.keys()
    assert accepted["rebuild_requested"] is True
    assert (during["status"], during["error"]) == ("rebuilding", None)
    assert set(outcomes) == {("spend", 201), ("read", 200)}, outcomes
    after = {user_id: api.current(user_id) for user_id in ids}
    assert after == before
    assert users_table_oid(api) != table_before  # a new table was swapped in
    busy_now = api.current(busy)
    assert busy_now["free_chat_messages"] == 20 + 1_000_000 - outcomes["spend", 201]
    projection = api.wait_until_running()
    assert projection["error"] is None
    assert projection["position"] == head(api.database)
    for user_id in [*ids, busy]:
        audit = api.json(api.get(f"/v1/audit/users/{user_id}"))
        assert audit["consistent"] is True, audit


def rebuild_requested_at(api: Api) -> Any:
    return rows(api.database, f"SELECT rebuild_requested FROM {st.STATUS_TABLE}")[0][0]


def test_a_rebuild_asked_for_again_under_its_key_is_asked_for_once(api: Api) -> None:
    used = api.new_id("keyed")
    api.check_command(api.post("/v1/users", {"id": used}, key=f"register-{used}"))
    path = "/v1/projections/users/rebuild"

    with rebuild_held_at_its_start(api):
        first = api.post(path, key=f"rebuild-{used}")
        wait_until(lambda: api.projection()["status"] == "rebuilding", timeout=30)
        requested = rebuild_requested_at(api)
        again = api.post(path, key=f"rebuild-{used}")
        requested_again = rebuild_requested_at(api)
        command_under_it = api.post("/v1/users", {"id": api.new_id()}, key=f"rebuild-{used}")
        rebuild_under_a_commands_key = api.post(path, key=f"register-{used}")
        spaced = api.post(path, key="two words")
    wait_until(lambda: rebuilt(api.projection()), timeout=60)

    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    assert requested is not None and requested_again == requested
    api.problem(command_under_it, 422, "idempotency-key-reused")
    api.problem(rebuild_under_a_commands_key, 422, "idempotency-key-reused")
    api.problem(spaced, 422)
    # Asked for once: once done, no second rebuild is pending.
    assert rebuild_requested_at(api) is None
    assert api.projection()["rebuild_requested"] is False


def rebuilt(projection: dict[str, Any]) -> bool:
    rebuild = projection.get("rebuild") or {}
    return (
        projection["status"] == "running"
        and not projection.get("rebuild_requested")
        and rebuild.get("phase") == "done"
    )


# -- an audit while the rebuilt table is swapped in ------------------------------------------
#
# The race is made certain by holding, from sessions of the test, locks the
# rebuild and the projector wait for: a lock in the staging schema (which the
# rebuild drops first), the projection's table lock (an advisory lock), and a
# share lock on the rebuilt table, which the swap must move into place.


def waiting(api: Api, condition: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The pids of the ledger's sessions waiting for a lock, and meeting `condition`."""
    return rows(
        api.database,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        f"AND wait_event_type = 'Lock' AND {condition} ORDER BY query_start",
        params,
    )


def test_an_audit_during_the_swap_of_a_rebuilt_table_finds_the_user_consistent(
    serve_ledger: Callable[..., AbstractContextManager[Api]],
) -> None:
    staging = f"{STAGING_SCHEMA}.users"
    advisory = "wait_event = 'advisory'"
    with serve_ledger() as api:
        user_id = api.registered("audited")
        with (
            api.database.connect() as holder,
            api.database.connect(autocommit=False) as staged,
        ):
            # The rebuild starts by dropping the staging schema: it waits there.
            holder.execute(f"CREATE SCHEMA {STAGING_SCHEMA}")
            holder.execute(f"CREATE TABLE {staging} (id text)")
            staged.execute(f"LOCK TABLE {staging} IN ACCESS SHARE MODE")
            api.json(api.post("/v1/projections/users/rebuild"), 202)
            wait_until(lambda: bool(waiting(api, "query ILIKE '%%DROP SCHEMA%%'")), timeout=30)

            # The projector stops at its next batch; then the rebuild copies,
            # catches up, and waits behind it to swap.
            holder.execute("SELECT pg_advisory_lock(%s)", (st.table_lock("users"),))
            wait_until(lambda: len(waiting(api, advisory)) == 1, timeout=10)
            staged.rollback()
            wait_until(lambda: len(waiting(api, advisory)) == 2, timeout=30)

            # A spend the rebuilt table has not seen. The projector applies it to
            # the live table; then the swap applies it to the new table, drops the
            # live one, and waits to move the new one into its place.
            spent = api.check_command(
                api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 1})
            )
            staged.execute(f"LOCK TABLE {staging} IN ACCESS SHARE MODE")
            holder.execute("SELECT pg_advisory_unlock(%s)", (st.table_lock("users"),))
            wait_until(lambda: bool(waiting(api, "query ILIKE '%%SET SCHEMA%%'")), timeout=5)
            assert api.projection()["position"] >= spent["event"]["position"]

            answers: dict[str, Any] = {}
            audit = threading.Thread(
                target=lambda: answers.setdefault("audit", api.get(f"/v1/audit/users/{user_id}"))
            )
            audit.start()
            wait_until(
                lambda: bool(waiting(api, """query ILIKE '%%"public"."users"%%'""")),
                timeout=5,
            )
            staged.rollback()  # the swap completes
            audit.join(30)

        result = api.json(answers["audit"])
        assert result["consistent"] is True, result["differences"]
