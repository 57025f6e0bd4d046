"""Users read ahead of their batch (ledger.writer.warming) on real PostgreSQL:
what is read ahead is a head start, never the basis of a decision."""

from __future__ import annotations

import asyncio

import pytest

from ledger.application import Ledger
from ledger.commands import RegisterUser, SpendCredits
from ledger.db import Database
from ledger.domain import Cause, User
from ledger.errors import HistoryUnreadable, InsufficientBalance
from ledger.writer.cache import UserCache
from ledger.writer.warming import Warmer
from tests.helpers import BackgroundWriter, record_unreadable_event

CAUSE = Cause("service", "key_test", "req_test", None)


def read_ahead(ledger: Ledger, database: Database, cache: UserCache, *user_ids: str) -> None:
    async def main() -> None:
        warmer = Warmer(ledger, database, cache)
        try:
            futures = [warmer.read(user_id) for user_id in user_ids]
            await asyncio.gather(*(f for f in futures if f is not None))
        finally:
            await warmer.stop()

    asyncio.run(main())


def test_users_are_read_into_the_cache_as_stored(
    ledger: Ledger, database: Database, writer: BackgroundWriter
) -> None:
    for user_id in ("ann", "bob"):
        writer.execute(RegisterUser(user_id), CAUSE)
    writer.execute(SpendCredits("bob", 4, "image"), CAUSE)
    cache = UserCache(10)
    read_ahead(ledger, database, cache, "ann", "bob", "nobody")
    ann, bob = cache.peek("ann"), cache.peek("bob")
    assert ann is not None and bob is not None
    assert (ann.version, ann.state.free_credits) == (1, 10)
    assert (bob.version, bob.state.free_credits) == (2, 6)
    assert cache.peek("nobody") is None


def test_a_user_the_cache_holds_is_never_replaced(
    ledger: Ledger, database: Database, writer: BackgroundWriter
) -> None:
    writer.execute(RegisterUser("ann"), CAUSE)
    cache = UserCache(10)
    read_ahead(ledger, database, cache, "ann")
    held = cache.peek("ann")
    writer.execute(SpendCredits("ann", 1, "image"), CAUSE)
    read_ahead(ledger, database, cache, "ann")
    assert cache.peek("ann") is held


def test_a_history_this_release_cannot_read_is_left_to_its_batch(
    ledger: Ledger, database: Database, writer: BackgroundWriter
) -> None:
    writer.execute(RegisterUser("ann"), CAUSE)
    record_unreadable_event(database, "ann", 2)
    cache = UserCache(10)
    read_ahead(ledger, database, cache, "ann")
    assert cache.peek("ann") is None
    with pytest.raises(HistoryUnreadable):
        writer.execute(SpendCredits("ann", 1, "image"), CAUSE)


def test_what_was_read_ahead_is_brought_up_to_date_before_a_decision(
    ledger: Ledger, database: Database, writer: BackgroundWriter
) -> None:
    """Another process spends after the user was read ahead: the decision
    sees that spend (no overdraft from a stale head start)."""
    writer.execute(RegisterUser("ann"), CAUSE)
    other = BackgroundWriter(ledger, database)
    try:

        async def read_ann() -> User | None:
            future = other.writer._warmer.read("ann")
            assert future is not None
            await future
            return other.writer._cache.peek("ann")

        read = asyncio.run_coroutine_threadsafe(read_ann(), other.loop).result(30)
        assert read is not None and read.state.free_credits == 10
        writer.execute(SpendCredits("ann", 10, "image"), CAUSE)
        with pytest.raises(InsufficientBalance):
            other.execute(SpendCredits("ann", 1, "image"), CAUSE)
    finally:
        other.stop()
