"""Cold users: spends over 1,000,000 users beside spends over 10,000, in the
same run, each history recorded by `ledger generate --users N --events N`
(a registration each: 10 credits) and kept between runs.

Over 10,000 users every user is soon in the writer's memory; over 1,000,000
almost every spend is a user's first since the server started, so it reads
the user's history (the latest snapshot and what follows) before deciding.
The ratio says what that costs."""

from __future__ import annotations

from typing import Any

import psutil

from bench import wrk
from bench.databases import PREFIX, Server, scalar
from bench.processes import API_KEY, ledger_server, serving
from bench.rebuild import ensure_generated
from bench.throughput import Usage, postmaster, wait_projected
from bench.wrk import Load

SIZES = (("warm", 10_000), ("cold", 1_000_000))
DIGITS = 7  # ledger generate's user ids: a prefix, then 7 digits


def _size(users: int) -> str:
    return f"{users // 1_000_000}m" if users % 1_000_000 == 0 else f"{users // 1000}k"


def _prefix(server: Server, name: str) -> str:
    """The prefix of the generated users' ids."""
    with server.database(name).connect() as conn:
        row = conn.execute("SELECT originator_id FROM ledger_events LIMIT 1").fetchone()
    assert row is not None
    return str(row[0])[:-DIGITS]


def measure_one(server: Server, users: int, *, warmup: float, seconds: float) -> dict[str, Any]:
    name, generated = ensure_generated(server, f"{PREFIX}_users_{_size(users)}", users, users, 0)
    load = Load(users, _prefix(server, name), DIGITS)
    with server.scratch(f"cold_{_size(users)}", template=name) as database:
        with serving(ledger_server(database)) as served:
            wait_projected(database, timeout=600)
            wrk.run(served.url, load, API_KEY, warmup, seed=2)
            usage = Usage(psutil.Process(served.pid), postmaster(database))
            usage.start()
            result = wrk.run(served.url, load, API_KEY, seconds, seed=3).as_dict()
            result.update(usage.stop(result["wrk_cpu_cores"]))
        result["users"] = scalar(database, "SELECT count(*) FROM users")
    result["generated_seconds"] = None if generated is None else round(generated, 1)
    return result


def measure(server: Server, *, warmup: float, seconds: float) -> dict[str, Any]:
    found = {
        label: measure_one(server, users, warmup=warmup, seconds=seconds) for label, users in SIZES
    }
    warm, cold = found["warm"]["spends_per_second"], found["cold"]["spends_per_second"]
    return {**found, "ratio": round(cold / warm, 3) if warm else None}
