"""Spends per second and latency through HTTP, 64 clients, for the ledger and
each baseline, over 10,000 users and over one hot user. Every (system,
workload) pair runs in a database of its own, on a server started for it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import profile, wrk
from bench.baselines import CRUD_SCHEMA
from bench.databases import Server, scalar
from bench.processes import API_KEY, Served, baseline_server, ledger_server, serving
from bench.wrk import Load
from ledger import events_table
from ledger.application import Ledger
from ledger.commands import Command, GrantCredits, RegisterUser
from ledger.db import Database
from ledger.domain import Cause
from ledger.writer import run_together
from projections.views import present

SYSTEMS = ("ledger", "eventsourcing", "crud", "insert", "fastapi", "asgi")
BASELINES = SYSTEMS[1:]
#: Baselines that touch no database: run over 10,000 users only (whom a
#: request names makes no difference to them).
FRAMEWORKS = ("fastapi", "asgi")
LABELS = {
    "ledger": "ledger",
    "eventsourcing": "plain eventsourcing",
    "crud": "CRUD (UPDATE + audit INSERT)",
    "insert": "one INSERT (floor)",
    "fastapi": "FastAPI hello (JSON, no work)",
    "asgi": "bare ASGI callable (floor)",
}


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    load: Load
    credits: int  # granted to each user before the run, beside the 10 of registration

    def user_ids(self) -> list[str]:
        if self.load.users == 1:
            return [self.load.prefix]
        return [f"{self.load.prefix}{i:05d}" for i in range(self.load.users)]


WORKLOADS = (
    Workload("users_10k", "10,000 users", Load(10_000, "u"), credits=10_000),
    Workload("hot_user", "one hot user", Load(1, "hot"), credits=1_000_000),
)


# -- preparing a database ----------------------------------------------------------


def prepare_events(database: Database, workload: Workload) -> None:
    """The ledger's tables, and the workload's users registered and granted
    credits, through the ledger's own commands."""
    from api.bootstrap import init_database

    init_database(database)
    cause = Cause(actor_role="admin", request_id="bench-setup")
    commands: list[tuple[Command, Cause]] = []
    for user_id in workload.user_ids():
        commands.append((RegisterUser(user_id), cause))
        commands.append((GrantCredits(user_id, workload.credits, "bench"), cause))
    ledger = Ledger.open(database)
    try:
        for start in range(0, len(commands), 5000):
            run_together(ledger, database, present, commands[start : start + 5000])
    finally:
        ledger.close()


def prepare_crud(database: Database, workload: Workload, *, with_users: bool) -> None:
    with database.connect() as conn:
        conn.execute(CRUD_SCHEMA)
        if with_users:
            ids = workload.user_ids()
            conn.execute(
                "INSERT INTO users (id, free_credits) SELECT id, %s FROM unnest(%s::text[]) AS id",
                (10 + workload.credits, ids),
            )
        conn.execute("VACUUM ANALYZE")


def wait_projected(database: Database, timeout: float = 60.0) -> None:
    """Until the projector has applied every event recorded so far."""
    from projections import status as st

    deadline = time.monotonic() + timeout
    with database.connect() as conn:
        target = events_table.head(conn)
        while st.read_position(conn, "users", lock=False) < target:
            if time.monotonic() > deadline:
                raise RuntimeError("the projector did not catch up with the set-up events")
            time.sleep(0.1)


# -- measuring ---------------------------------------------------------------------


def _cpu(processes: list[psutil.Process]) -> dict[int, float]:
    seconds: dict[int, float] = {}
    for process in processes:
        try:
            t = process.cpu_times()
        except psutil.Error:
            continue
        seconds[process.pid] = t.user + t.system
    return seconds


def _tree(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return [process]


def postmaster(database: Database) -> psutil.Process | None:
    """The PostgreSQL server's main process, if it runs on this machine."""
    try:
        backend = scalar(database, "SELECT pg_backend_pid()")
        return psutil.Process(backend).parent()
    except (psutil.Error, OSError):
        return None


@dataclass
class Usage:
    """CPU used, in cores, while a measurement ran: by the server's main process,
    by its children (the ledger's projector), by PostgreSQL (all of the
    server's processes, so other databases' too), and by the whole machine.
    What the machine used beyond these and wrk was someone else's."""

    server: psutil.Process
    database: psutil.Process | None
    started: float = 0.0
    before: dict[str, dict[int, float]] = field(default_factory=dict)
    machine: Any = None

    def _groups(self) -> dict[str, list[psutil.Process]]:
        return {
            "server": [self.server],
            "children": _tree(self.server)[1:],
            "postgres": _tree(self.database) if self.database is not None else [],
        }

    def start(self) -> None:
        self.started = time.monotonic()
        self.before = {name: _cpu(group) for name, group in self._groups().items()}
        self.machine = psutil.cpu_times()

    def stop(self, wrk_cpu_cores: float) -> dict[str, float]:
        seconds = time.monotonic() - self.started
        machine = psutil.cpu_times()
        cores = psutil.cpu_count() or 1
        total = sum(machine) - sum(self.machine)
        busy = total - (machine.idle - self.machine.idle)
        numbers: dict[str, float] = {}
        for name, group in self._groups().items():
            # Processes that came and went meanwhile are not counted.
            before = self.before.get(name, {})
            after = _cpu(group)
            used = sum(after[pid] - before.get(pid, 0.0) for pid in after)
            numbers[f"{name}_cpu_cores"] = round(used / seconds, 3)
        ours = sum(numbers.values()) + wrk_cpu_cores
        busy_cores = cores * busy / total if total else 0.0
        numbers["machine_busy"] = round(busy / total, 3) if total else 0.0
        numbers["others_cpu_cores"] = round(max(0.0, busy_cores - ours), 3)
        return numbers


def _served(system: str, database: Database) -> Served:
    return ledger_server(database) if system == "ledger" else baseline_server(system, database)


def measure(
    server: Server,
    system: str,
    workload: Workload,
    *,
    warmup: float,
    seconds: float,
    profile_to: Path | None = None,
) -> dict[str, Any]:
    """One system under one workload, in a fresh database: warm up, then measure."""
    with server.scratch(f"{system}_{workload.name}") as database:
        if system in ("ledger", "eventsourcing"):
            prepare_events(database, workload)
        elif system not in FRAMEWORKS:
            prepare_crud(database, workload, with_users=system == "crud")
        with serving(_served(system, database)) as served:
            if system == "ledger":
                wait_projected(database)
            wrk.run(served.url, workload.load, API_KEY, warmup, seed=2)

            def load() -> wrk.WrkResult:
                return wrk.run(served.url, workload.load, API_KEY, seconds, seed=3)

            if profile_to is not None:
                return {"profiles": profile.record_under(served.pid, profile_to, seconds, load)}
            usage = Usage(psutil.Process(served.pid), postmaster(database))
            before = batches(served.url) if system == "ledger" else None
            usage.start()
            result = load().as_dict()
            numbers = {**result, **usage.stop(result["wrk_cpu_cores"])}
            if before is not None:
                numbers["batches"] = _batches_between(before, batches(served.url), seconds)
            return numbers


def batches(url: str) -> dict[str, float]:
    """The ledger's group-commit counters from its /metrics."""
    import httpx

    wanted = {
        "ledger_group_commit_seconds_sum": "seconds",
        "ledger_group_commit_seconds_count": "batches",
        "ledger_group_commit_batch_size_sum": "commands",
    }
    found: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            found[wanted[name]] = float(value)
    return found


def _batches_between(
    before: dict[str, float], after: dict[str, float], seconds: float
) -> dict[str, float]:
    """Over the measured window: batches, commands per batch, and how long a
    batch's transaction took (from taking the table lock to its commit), which
    is how long the lock was held; `lock_busy` is the fraction of the window it
    was."""
    count = after.get("batches", 0.0) - before.get("batches", 0.0)
    held = after.get("seconds", 0.0) - before.get("seconds", 0.0)
    commands = after.get("commands", 0.0) - before.get("commands", 0.0)
    return {
        "batches_per_second": round(count / seconds, 1),
        "commands_per_batch": round(commands / count, 1) if count else 0.0,
        "batch_ms": round(1000 * held / count, 2) if count else 0.0,
        "lock_busy": round(held / seconds, 3),
    }


def run_all(
    server: Server,
    *,
    warmup: float,
    seconds: float,
    systems: tuple[str, ...] = SYSTEMS,
    on_result: Callable[[str, str, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for workload in WORKLOADS:
        results[workload.name] = {}
        for system in systems:
            if system in FRAMEWORKS and workload is not WORKLOADS[0]:
                continue
            result = measure(server, system, workload, warmup=warmup, seconds=seconds)
            results[workload.name][system] = result
            if on_result is not None:
                on_result(workload.name, system, result)
    return results
