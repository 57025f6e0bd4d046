"""The writer itself, without HTTP, each scenario beside its baseline in one run:

- the hash chain: spends/s with the chain's links written alongside, beside the
  same writer without them;
- grants: spends/s for users with 20 active grants each, beside users with one;
- expiry: grants expired per second by the expiry worker, 100,000 at one
  instant, with the projector in a process of its own (as `ledger serve` runs
  them).

Spends come from 64 concurrent submitters on one event loop, as 64 HTTP
connections would hand them to the writer; each side's number is the median of
five measurements of `seconds` each, baseline and scenario alternating, and
the ratio the median of the five rounds' ratios.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import statistics
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from api.collector import tune_garbage_collector
from bench.databases import Server
from ledger.application import Ledger
from ledger.commands import Command, GrantCredits, RegisterUser, SpendCredits
from ledger.db import Database
from ledger.domain import Cause
from ledger.writer import CommandWriter
from ledger.writer.alongside import DEFAULT_PARTS, ChainLinks, Part
from ledger.writer.threaded import ThreadedWriter
from projections.expiry import ExpiryWorker
from projections.projector import Projector
from projections.views import present

CAUSE = Cause("service", "key_bench", None, None)
SUBMITTERS = 64
USERS = 2_000
#: Measurements of each side of a pair, alternating.
ROUNDS = 5


def _prepare(database: Database, prefix: str, grants_each: int) -> list[str]:
    from api.bootstrap import init_database

    init_database(database)
    ledger = Ledger.open(database)
    writer = ThreadedWriter(ledger, database, present)
    users = [f"{prefix}{i:05d}" for i in range(USERS)]
    try:
        writer.execute_together([(RegisterUser(u), CAUSE) for u in users], timeout=None)
        # The registration's 10 spent: each user has only the grants made here.
        writer.execute_together([(SpendCredits(u, 10), CAUSE) for u in users], timeout=None)
        far = datetime.now(UTC) + timedelta(days=3650)
        commands: list[tuple[Command, Any]] = []
        for i, user in enumerate(users):
            for n in range(grants_each):
                # Different priorities and expiries: a spend sorts them all.
                expires = far + timedelta(minutes=(i + n) % 97) if n % 2 else None
                commands.append((GrantCredits(user, 100_000, "bench", n % 5 * 10, expires), CAUSE))
        for start in range(0, len(commands), 5000):
            writer.execute_together(commands[start : start + 5000], timeout=None)
    finally:
        writer.stop()
        ledger.close()
    return users


async def _spends_per_second(
    database: Database, users: Sequence[str], parts: Sequence[Part], seconds: float
) -> float:
    ledger = Ledger.open(database)
    writer = CommandWriter(ledger, database, present, alongside=parts, cache_size=100_000)
    tune_garbage_collector()  # as the API's process does
    await writer.start()
    rng = random.Random(1)
    done = 0
    deadline = 0.0

    async def submitter() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await writer.submit(SpendCredits(rng.choice(users), 1, "bench"), CAUSE)
            done += 1

    try:
        # Every user in the writer's cache first (loading a user from its
        # history is the cold-users scenario's, not this one's), then a second.
        await asyncio.gather(*(writer.submit(SpendCredits(u, 1, "bench"), CAUSE) for u in users))
        deadline = time.monotonic() + 1.0
        await asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))
        done = 0
        started = time.monotonic()
        deadline = started + seconds
        await asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))
        return done / (time.monotonic() - started)
    finally:
        await writer.stop()
        ledger.close()


def _settle(database: Database, *, vacuum: bool = False) -> None:
    """Before a measurement: what the last one left for PostgreSQL to do in
    the background (a checkpoint's writes, autovacuum after the histories were
    recorded) done now, so that it lands in neither side's measurement."""
    with psycopg.connect(database.url, autocommit=True) as conn:
        if vacuum:
            conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


def _pairs(
    baseline: tuple[Database, Sequence[str], Sequence[Part]],
    scenario: tuple[Database, Sequence[str], Sequence[Part]],
    seconds: float,
) -> dict[str, Any]:
    runs: dict[str, list[float]] = {"baseline": [], "scenario": []}
    for database, _, _ in (baseline, scenario):
        _settle(database, vacuum=True)
    for _ in range(ROUNDS):
        for name, (database, users, parts) in (("baseline", baseline), ("scenario", scenario)):
            _settle(database)
            runs[name].append(asyncio.run(_spends_per_second(database, users, parts, seconds)))
    base, scen = statistics.median(runs["baseline"]), statistics.median(runs["scenario"])
    # Each round's two measurements are next to each other in time, and share
    # whatever the machine was doing then: the ratio is the median of the
    # rounds' ratios.
    ratios = [s / b for b, s in zip(runs["baseline"], runs["scenario"], strict=True)]
    return {
        "baseline_per_second": round(base),
        "scenario_per_second": round(scen),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_of_medians": round(scen / base, 3),
        "runs": runs,
    }


def chain_cost(server: Server, seconds: float) -> dict[str, Any]:
    without = tuple(p for p in DEFAULT_PARTS if not isinstance(p, ChainLinks))
    # A database each: the chain's writer would otherwise find the events the
    # other wrote unchained, a gap left to the sealer, and chain nothing.
    with server.scratch("writer_unchained") as plain, server.scratch("writer_chain") as chained:
        users_plain = _prepare(plain, "c", 1)
        users_chained = _prepare(chained, "c", 1)
        return _pairs(
            (plain, users_plain, without), (chained, users_chained, DEFAULT_PARTS), seconds
        )


def many_grants(server: Server, seconds: float) -> dict[str, Any]:
    with server.scratch("writer_one_grant") as one, server.scratch("writer_20_grants") as many:
        users_one = _prepare(one, "o", 1)
        users_many = _prepare(many, "m", 20)
        return _pairs((one, users_one, DEFAULT_PARTS), (many, users_many, DEFAULT_PARTS), seconds)


def expiry(server: Server, grants: int = 100_000, users: int = 10_000) -> dict[str, Any]:
    """`grants` grants over `users` users, all expiring at one instant; the
    clock moved past it; the worker's time to record them all."""
    with server.scratch("writer_expiry") as database:
        from api.bootstrap import init_database

        init_database(database)
        ledger = Ledger.open(database)
        clock = _Clock()
        instant = clock() + timedelta(hours=1)
        writer = ThreadedWriter(ledger, database, present, clock=clock)
        ids = [f"e{i:05d}" for i in range(users)]
        each = grants // users
        try:
            writer.execute_together([(RegisterUser(u), CAUSE) for u in ids], timeout=None)
            commands = [
                (GrantCredits(u, 1, "promotion", expires_at=instant), CAUSE)
                for u in ids
                for _ in range(each)
            ]
            for start in range(0, len(commands), 5000):
                writer.execute_together(commands[start : start + 5000], timeout=None)
        finally:
            writer.stop()
        # As `ledger serve` runs them: the projector and the worker in
        # processes of their own (here, the worker in this one).
        projector = multiprocessing.get_context("spawn").Process(
            target=_project, args=(database.url,), name="bench-projector", daemon=True
        )
        projector.start()
        tune_garbage_collector()  # as the worker's process does
        worker = ExpiryWorker(database, ledger, clock=clock, poll_interval=0.05)
        try:
            _until_projected(database)
            _settle(database, vacuum=True)
            worker.start()
            clock.advance(3601)
            started = time.monotonic()
            # Watched through the worker's count (each user's grants expire in
            # one catch-up), not by counting events: that would load the server.
            while worker.recorded < users:
                time.sleep(0.01)
            while _expired(database) < users * each:
                time.sleep(0.01)
            seconds = time.monotonic() - started
        finally:
            worker.stop()
            projector.terminate()
            projector.join()
            ledger.close()
        return {
            "grants": users * each,
            "users": users,
            "seconds": round(seconds, 2),
            "grants_per_second": round(users * each / seconds),
        }


def _project(url: str) -> None:
    """The projector's process, until it is terminated."""
    database = Database(url)
    projector = Projector(database, Ledger.open(database), poll_interval=0.05)
    tune_garbage_collector()
    projector.start()
    threading.Event().wait()


class _Clock:
    """The system's clock, moved forward by `advance`."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


def _expired(database: Database) -> int:
    with database.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM ledger_events WHERE topic LIKE '%.CreditsExpired'"
        ).fetchone()
    return int(row[0]) if row else 0


def _until_projected(database: Database, timeout: float = 300) -> None:
    from ledger import events_table
    from projections import status as st

    deadline = time.monotonic() + timeout
    with database.connect() as conn:
        target = events_table.head(conn)
        while st.read_position(conn, "users", lock=False) < target:
            if time.monotonic() > deadline:
                raise RuntimeError("the projector did not catch up")
            time.sleep(0.05)


def measure(server: Server, seconds: float) -> dict[str, Any]:
    return {
        "chain": chain_cost(server, seconds),
        "grants": many_grants(server, seconds),
        "expiry": expiry(server),
    }
