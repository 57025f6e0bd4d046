"""`make bench`: the ledger beside its baselines, on one database server, in one run.

    python -m bench            HTTP throughput and latency (beside FastAPI's hello and
                               a bare ASGI callable), cold users (1,000,000 beside
                               10,000), projector lag, rebuild (1,000,000-event
                               history; every history generated once and kept)
    python -m bench --quick    shorter runs and a 100,000-event history
    python -m bench --profile  instead: py-spy on the ledger under the HTTP loads and
                               on a rebuild (profiles in bench/results/profile-*/)

The database server is LEDGER_DATABASE_URL's if set, else the embedded one in
./.ledger/. Prints a Markdown table and writes every number to
bench/results/<timestamp>.json. See BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil

from bench import cold, lag, profile, rebuild, replies, report, throughput, webhooks, writer
from bench.databases import RUN_ID, Server, sweep
from bench.wrk import ensure_wrk

SECTIONS = ("http", "cold", "lag", "rebuild", "replies", "writer", "verify", "webhooks")


def machine(server: Server) -> dict[str, Any]:
    model = "?"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "database_server": server.kind,
        "postgres": server.version(),
        "postgres_settings": server.settings(
            "shared_buffers", "synchronous_commit", "fsync", "max_connections"
        ),
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="5 s measurements and a 100,000-event history"
    )
    parser.add_argument("--seconds", type=float, help="measured seconds per HTTP run (10)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds before each (5)")
    parser.add_argument(
        "--events", type=int, help="events in the rebuild's history (1,000,000; --quick 100,000)"
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run: {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument(
        "--systems",
        default=",".join(throughput.SYSTEMS),
        help=f"systems of the HTTP section (default: {','.join(throughput.SYSTEMS)})",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead: py-spy profiles of the ledger under each HTTP workload, and of a rebuild",
    )
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (5.0 if args.quick else 10.0)
    args.warmup = args.warmup or (2.0 if args.quick else 5.0)
    args.events = args.events or (100_000 if args.quick else 1_000_000)
    args.only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    args.systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    for name in args.only:
        if name not in SECTIONS:
            parser.error(f"unknown section {name!r}")
    for name in args.systems:
        if name not in throughput.SYSTEMS:
            parser.error(f"unknown system {name!r}")
    return args


def _say(text: str) -> None:
    print(text, flush=True)


def _run_profile(server: Server, args: argparse.Namespace, stamp: str) -> int:
    folder = report.RESULTS / f"profile-{stamp}"
    for workload in throughput.WORKLOADS:
        _say(f"profiling the ledger, {workload.title}...")
        result = throughput.measure(
            server,
            "ledger",
            workload,
            warmup=args.warmup,
            seconds=args.seconds,
            profile_to=folder / workload.name,
        )
        profiles = result["profiles"]
        loaded = profiles["load_under_profiler"] or {}
        _say(
            f"\n## {workload.title}: {loaded.get('spends_per_second', 'n/a')} spends/s "
            f"under the profiler\n"
        )
        _say(profile.render(profiles["gil"], "py-spy --gil --threads"))
        _say(profile.render(profiles["main_thread_idle"], "py-spy --idle, main thread"))
        (folder / workload.name / "summary.json").write_bytes(
            orjson.dumps(profiles, option=orjson.OPT_INDENT_2)
        )
    _say(f"profiling ledger rebuild, {args.events:,} events...")
    summary = rebuild.profile_rebuild(server, args.events, folder / "rebuild" / "idle.txt")
    _say(profile.render(summary, "py-spy --idle, ledger rebuild, main thread"))
    (folder / "rebuild" / "summary.json").write_bytes(
        orjson.dumps(summary, option=orjson.OPT_INDENT_2)
    )
    _say(f"Raw profiles (collapsed stacks) in {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    ensure_wrk()
    server = Server.resolve()
    for name in sweep(server):
        _say(f"dropped {name}, left behind by a bench run that was killed")
    report.RESULTS.mkdir(parents=True, exist_ok=True)
    if args.profile:
        return _run_profile(server, args, stamp)

    result: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": RUN_ID,
        "machine": machine(server),
        "options": {
            "quick": args.quick,
            "warmup_seconds": args.warmup,
            "measured_seconds": args.seconds,
            "history_events": args.events,
            "wrk": "-t2 -c64",
        },
        "errors": {},
    }
    info = result["machine"]
    _say(
        f"bench {RUN_ID}: {info['nproc']} x {info['cpu_model']}, "
        f"{info['postgres'].split(' on ')[0]} ({server.kind}), "
        f"load average {info['load_average_at_start']}"
    )

    def show(workload: str, system: str, numbers: dict[str, Any]) -> None:
        _say(
            f"  {workload:10} {system:14} {numbers['spends_per_second']:>9,.0f} spends/s  "
            f"p50 {numbers['p50_ms']:6.1f} ms  p99 {numbers['p99_ms']:6.1f} ms  "
            f"errors {numbers['non_2xx'] + numbers['socket_errors']}  "
            f"CPU: server {numbers['server_cpu_cores']:.2f}, "
            f"PostgreSQL {numbers['postgres_cpu_cores']:.2f}, "
            f"others {numbers['others_cpu_cores']:.2f}"
        )

    sections: dict[str, Callable[[], Any]] = {
        "http": lambda: throughput.run_all(
            server,
            warmup=args.warmup,
            seconds=args.seconds,
            systems=args.systems,
            on_result=show,
        ),
        "cold": lambda: cold.measure(server, warmup=args.warmup, seconds=args.seconds),
        "lag": lambda: lag.measure(server, warmup=min(args.warmup, 2.0), seconds=args.seconds),
        "rebuild": lambda: rebuild.measure(server, args.events),
        "replies": lambda: replies.measure(server, warmup=args.warmup, seconds=args.seconds),
        "writer": lambda: writer.measure(server, seconds=min(args.seconds, 5.0)),
        "verify": lambda: rebuild.measure_verify(server, args.events),
        "webhooks": lambda: webhooks.measure(server, warmup=args.warmup, seconds=args.seconds),
    }
    for name in args.only:
        _say(f"{name}...")
        try:
            result[name] = sections[name]()
        except Exception as e:
            traceback.print_exc()
            result["errors"][name] = f"{type(e).__name__}: {e}"
        else:
            if name == "lag":
                numbers = result[name]
                _say(
                    f"  lag p50 {numbers['lag_p50_ms']} ms, p99 {numbers['lag_p99_ms']} ms "
                    f"at {numbers['achieved_rate']} commands/s"
                )
            elif name == "cold":
                for label in ("warm", "cold"):
                    show(f"{result[name][label]['users']:,} users", "ledger", result[name][label])
            elif name in ("replies", "writer", "verify"):
                _say(f"  {orjson.dumps(result[name]).decode()[:300]}")
            elif name == "rebuild":
                numbers = result[name]
                _say(
                    f"  rebuild {numbers['rebuild']['events_per_second']:,} events/s, "
                    f"raw read {numbers['raw_read']['rows_per_second']:,} rows/s, "
                    f"peak {numbers['rebuild']['peak_rss_mb']} MB"
                )

    result["seconds"] = round(time.monotonic() - started, 1)
    path = report.RESULTS / f"{stamp}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    _say("")
    _say(report.markdown(report.rows(result)))
    _say("")
    _say(report.details(result))
    _say("")
    _say(report.capacity(result))
    shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
    _say(f"\n{result['seconds']:.0f} s in all; raw numbers in {shown}")
    if result["errors"]:
        _say(f"failed: {', '.join(result['errors'])}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
