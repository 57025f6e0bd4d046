"""`ledger rebuild` over a generated history, beside the raw read rate of the
same events.

The history is recorded once by `ledger generate` and kept in a database with
a stable name (ledger_bench_history_1m, or _100k for --quick); a later run
reuses it if its event count is right. Each run works on a copy of it.

The raw read streams `SELECT originator_id, originator_version, topic, state
FROM ledger_events` through a server-side cursor (binary, 10,000 rows a fetch,
as the rebuild's own cursor), doing nothing with the rows: the rate a rebuild
could reach if folding, writing and verifying cost nothing. It runs before and
after the rebuild; the faster of the two is the baseline.

The rebuild runs as `ledger rebuild` in a child process; its peak memory is the
child's ru_maxrss.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench import profile
from bench.databases import PREFIX, Server, scalar
from bench.processes import python_env, run_measured
from ledger.db import Database

EVENTS_PER_USER = 10
LEGACY_FRACTION = 0.1  # `ledger generate`'s default
#: At most this many old-shape registrations in a history: a few per cent is what
#: a rebuild meets in practice. (Part of the recipe the cached history is known by.)
MAX_LEGACY_EVENTS = 2000
STALL_SECONDS = 60

_RESULT = re.compile(
    r"Rebuilt users \(version (?P<version>[^)]*)\): (?P<users>[\d,]+) users from "
    r"(?P<events>[\d,]+) events in (?P<seconds>[\d.]+)s \((?P<rate>[\d,]+) events/s\)"
)


def history_name(events: int) -> str:
    size = f"{events // 1_000_000}m" if events % 1_000_000 == 0 else f"{events // 1000}k"
    return f"{PREFIX}_history_{size}"


def _count(database: Database) -> int:
    return scalar(database, "SELECT count(*) FROM ledger_events")


def ensure_history(server: Server, events: int) -> tuple[str, float | None]:
    """The name of a database holding a generated history of `events` events,
    and the seconds spent generating it (None if it was there already)."""
    users = max(events // EVENTS_PER_USER, 1)
    legacy = min(LEGACY_FRACTION, MAX_LEGACY_EVENTS / users)
    return ensure_generated(server, history_name(events), users, events, legacy)


def ensure_generated(
    server: Server, name: str, users: int, events: int, legacy: float
) -> tuple[str, float | None]:
    """A database `name` holding what `ledger generate` records for these
    numbers (kept between runs, known by its recipe), and the seconds spent
    generating it (None if it was there already)."""
    recipe = (
        f"ledger generate --users {users} --events {events} --legacy-fraction {legacy:.4f} --seed 1"
    )
    if server.exists(name):
        try:
            if server.comment(name) == recipe and _count(server.database(name)) == events:
                return name, None
        except psycopg.Error:
            pass
        server.drop(name)
    partial = f"{name}_partial"
    server.drop(partial)
    database = server.create(partial)
    print(f"Generating a history of {events:,} events for {users:,} users (kept as {name})...")
    started = time.monotonic()
    try:
        _generate(database, recipe)
        found = _count(database)
        if found != events:
            raise RuntimeError(f"ledger generate recorded {found:,} events, not {events:,}")
    except BaseException:
        server.drop(partial)
        raise
    seconds = time.monotonic() - started
    server.rename(partial, name)
    server.set_comment(name, recipe)
    return name, seconds


def _generate(database: Database, recipe: str) -> None:
    """`ledger generate`, stopped if it records nothing for STALL_SECONDS."""
    argv = [sys.executable, "-m", "api.cli", *recipe.split()[1:]]
    process = subprocess.Popen(
        argv,
        env=_ledger_env(database),
        stdout=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        last, last_change = -1, time.monotonic()
        while process.poll() is None:
            time.sleep(2)
            try:
                head = scalar(database, "SELECT max(notification_id) FROM ledger_events")
            except psycopg.Error:
                head = last  # the table may not exist yet
            if head != last:
                last, last_change = head, time.monotonic()
            elif time.monotonic() - last_change > STALL_SECONDS:
                raise RuntimeError(
                    f"ledger generate recorded nothing for {STALL_SECONDS}s "
                    f"(at {max(last, 0):,} events): stopped"
                )
        if process.returncode != 0:
            raise RuntimeError(f"ledger generate failed with exit code {process.returncode}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def raw_read(database: Database) -> dict[str, float]:
    with database.connect(autocommit=False) as conn:
        conn.read_only = True
        started = time.perf_counter()
        rows = 0
        with conn.cursor(name="bench_raw_read", binary=True) as curs:
            curs.itersize = 10_000
            curs.execute(
                "SELECT originator_id, originator_version, topic, state FROM ledger_events"
            )
            for _ in curs:
                rows += 1
        seconds = time.perf_counter() - started
        conn.rollback()
    return {"rows": rows, "seconds": round(seconds, 3), "rows_per_second": round(rows / seconds)}


def _ledger_env(database: Database) -> dict[str, str]:
    """The environment of a `ledger` child working on `database`."""
    return python_env(LEDGER_DATABASE_URL=database.url, LEDGER_LOG_LEVEL="warning")


def rebuild_child(database: Database) -> dict[str, Any]:
    """`ledger rebuild` in a child process: its report, wall time and peak memory."""
    finished = run_measured(
        [sys.executable, "-m", "api.cli", "rebuild"],
        _ledger_env(database),
    )
    text = finished.output
    found = _RESULT.search(text)
    if finished.returncode != 0 or found is None:
        raise RuntimeError(f"ledger rebuild failed ({finished.returncode}):\n{text[-3000:]}")
    return {
        "events": int(found["events"].replace(",", "")),
        "users": int(found["users"].replace(",", "")),
        "seconds": float(found["seconds"]),
        "events_per_second": int(found["rate"].replace(",", "")),
        "process_seconds": round(finished.seconds, 2),
        "peak_rss_mb": round(finished.peak_rss_mb, 1),
        "cpu_seconds": round(finished.cpu_seconds, 2),
    }


def audit_child(database: Database) -> dict[str, Any]:
    """`ledger audit --json` of the whole ledger (every users row against a
    replay of its history) in a child process, after a rebuild."""
    finished = run_measured(
        [sys.executable, "-m", "api.cli", "audit", "--json"], _ledger_env(database)
    )
    if finished.returncode != 0:
        raise RuntimeError(
            f"ledger audit failed ({finished.returncode}):\n{finished.output[-3000:]}"
        )
    found = orjson.loads(finished.output.strip().splitlines()[-1])
    return {
        "events": found["events_replayed"],
        "users": found["users_checked"],
        "seconds": round(finished.seconds, 2),
        "events_per_second": round(found["events_replayed"] / finished.seconds),
        "peak_rss_mb": round(finished.peak_rss_mb, 1),
    }


def profile_rebuild(server: Server, events: int, output: Path) -> dict[str, Any]:
    """`ledger rebuild` of the history under py-spy."""
    name, _ = ensure_history(server, events)
    with server.scratch("rebuild_profile", template=name) as database:
        return profile.record_command(
            [sys.executable, "-m", "api.cli", "rebuild"],
            _ledger_env(database),
            output,
        )


def measure(server: Server, events: int) -> dict[str, Any]:
    name, generated = ensure_history(server, events)
    started = time.monotonic()
    with server.scratch("rebuild", template=name) as database:
        copied = time.monotonic() - started
        before = raw_read(database)
        rebuild = rebuild_child(database)
        audit = audit_child(database)
        after = raw_read(database)
    best = max(before, after, key=lambda r: r["rows_per_second"])
    return {
        "history": name,
        "history_events": events,
        "generated_seconds": None if generated is None else round(generated, 1),
        "copy_seconds": round(copied, 1),
        "rebuild": rebuild,
        "audit": audit,
        "raw_read": best,
        "raw_reads": [before, after],
    }


def measure_verify(server: Server, events: int) -> dict[str, Any]:
    """`ledger verify` of the whole history, in a child process (after sealing
    it, if it was recorded before the chain): events per second, peak memory."""
    name, _ = ensure_history(server, events)
    with server.scratch("verify", template=name) as database:
        # The kept history may be older than some of this release's tables.
        from api.bootstrap import init_database

        init_database(database)
        sealed = run_measured(
            [sys.executable, "-m", "api.cli", "verify", "--seal", "--json"], _ledger_env(database)
        )
        if sealed.returncode != 0:
            raise RuntimeError(f"ledger verify --seal failed:\n{sealed.output[-3000:]}")
        verified = run_measured(
            [sys.executable, "-m", "api.cli", "verify", "--json"], _ledger_env(database)
        )
        if verified.returncode != 0:
            raise RuntimeError(f"ledger verify failed:\n{verified.output[-3000:]}")
    found = orjson.loads(verified.output.strip().splitlines()[-1])
    return {
        "events": found["checked"],
        "seconds": round(verified.seconds, 2),
        "events_per_second": round(found["checked"] / verified.seconds),
        "peak_rss_mb": round(verified.peak_rss_mb, 1),
        "seal_seconds": round(sealed.seconds, 2),
    }
