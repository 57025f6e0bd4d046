"""The results: the Markdown table with ratios and goals, the raw numbers as
JSON, and medians over several runs.

    python -m bench.report bench/results/A.json bench/results/B.json ...

prints the table of the medians of those runs, and each run's key numbers.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.throughput import BASELINES, LABELS, WORKLOADS

RESULTS = Path(__file__).resolve().parent / "results"

#: The issue's goals, on a 2-core machine.
SPEND_GOALS = {"eventsourcing": 3.0, "crud": 1.0, "fastapi": 0.7}
P99_GOAL_MS = 50.0
#: Over 10,000 users, beside the FastAPI hello: the lean hot path's.
LEAN_P99_GOAL_MS = 25.0
LAG_P99_GOAL_MS = 50.0
REBUILD_GOAL = 50_000.0
#: Of the raw read's rows/s, for a rebuild and for an audit of the whole ledger.
REPLAY_RATIO_GOAL = 0.15


@dataclass(frozen=True)
class Row:
    scenario: str
    ledger: str
    baseline: str
    ratio: str
    goal: str
    met: str


def _get(result: dict[str, Any], *path: str) -> Any:
    value: Any = result
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _num(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _ratio(a: Any, b: Any) -> float | None:
    if a is None or b is None or not b:
        return None
    return float(a) / float(b)


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def _errors(system: dict[str, Any]) -> str:
    bad = (system.get("non_2xx") or 0) + (system.get("socket_errors") or 0)
    return f" ({bad:,} errors)" if bad else ""


def rows(result: dict[str, Any]) -> list[Row]:
    table: list[Row] = []
    for workload in WORKLOADS:
        systems = _get(result, "http", workload.name) or {}
        ledger = systems.get("ledger")
        if ledger is None:
            continue
        rate = ledger.get("spends_per_second")
        for name in BASELINES:
            other = systems.get(name)
            if other is None:
                continue
            ratio = _ratio(rate, other.get("spends_per_second"))
            goal = SPEND_GOALS.get(name)
            table.append(
                Row(
                    f"spends/s, {workload.title}, vs {LABELS[name]}",
                    _num(rate) + _errors(ledger),
                    _num(other.get("spends_per_second")) + _errors(other),
                    "n/a" if ratio is None else f"{ratio:.2f}x",
                    "" if goal is None else f">= {goal:.1f}x",
                    "" if goal is None else _met(None if ratio is None else ratio >= goal),
                )
            )
        for name in BASELINES:
            other = systems.get(name)
            if other is None:
                continue
            p50 = _ratio(ledger.get("p50_ms"), other.get("p50_ms"))
            p99 = _ratio(ledger.get("p99_ms"), other.get("p99_ms"))
            table.append(
                Row(
                    f"latency p50 / p99 (ms), {workload.title}, vs {LABELS[name]}",
                    f"{_num(ledger.get('p50_ms'), 1)} / {_num(ledger.get('p99_ms'), 1)}",
                    f"{_num(other.get('p50_ms'), 1)} / {_num(other.get('p99_ms'), 1)}",
                    f"{_num(p50, 2)}x / {_num(p99, 2)}x",
                    "",
                    "",
                )
            )
        p99_ms = ledger.get("p99_ms")
        p99_goal = LEAN_P99_GOAL_MS if workload is WORKLOADS[0] else P99_GOAL_MS
        table.append(
            Row(
                f"latency p99 at 64 clients, {workload.title}",
                f"{_num(p99_ms, 1)} ms",
                "",
                "",
                f"<= {p99_goal:.0f} ms",
                _met(None if p99_ms is None else p99_ms <= p99_goal),
            )
        )
    lag = result.get("lag")
    if lag and "lag_p99_ms" in lag:
        pace = f"{_num(lag.get('achieved_rate'))} commands/s achieved"
        table.append(
            Row(
                "projector lag p50 at 1,000 commands/s",
                f"{_num(lag.get('lag_p50_ms'), 1)} ms",
                pace,
                "",
                "",
                "",
            )
        )
        table.append(
            Row(
                "projector lag p99 at 1,000 commands/s",
                f"{_num(lag.get('lag_p99_ms'), 1)} ms",
                pace,
                "",
                f"<= {LAG_P99_GOAL_MS:.0f} ms",
                _met(lag["lag_p99_ms"] <= LAG_P99_GOAL_MS),
            )
        )
    rebuild = result.get("rebuild")
    if rebuild and "rebuild" in rebuild:
        events = rebuild["history_events"]
        rate = _get(rebuild, "rebuild", "events_per_second")
        read = _get(rebuild, "raw_read", "rows_per_second")
        ratio = _ratio(rate, read)
        table.append(
            Row(
                f"rebuild events/s ({events:,} events), vs raw read rows/s",
                _num(rate),
                _num(read),
                "n/a" if ratio is None else f"{ratio:.2f}x",
                f">= {REBUILD_GOAL:,.0f}/s and >= {REPLAY_RATIO_GOAL:.2f}x",
                _met(
                    None if ratio is None else rate >= REBUILD_GOAL and ratio >= REPLAY_RATIO_GOAL
                ),
            )
        )
        audit_rate = _get(rebuild, "audit", "events_per_second")
        audit_ratio = _ratio(audit_rate, read)
        if audit_rate is not None:
            table.append(
                Row(
                    "ledger audit events/s (the whole ledger), vs raw read rows/s",
                    _num(audit_rate),
                    _num(read),
                    "n/a" if audit_ratio is None else f"{audit_ratio:.2f}x",
                    f">= {REPLAY_RATIO_GOAL:.2f}x",
                    _met(None if audit_ratio is None else audit_ratio >= REPLAY_RATIO_GOAL),
                )
            )
        table.append(
            Row(
                "rebuild peak memory (ru_maxrss)",
                f"{_num(_get(rebuild, 'rebuild', 'peak_rss_mb'))} MB",
                "",
                "",
                "",
                "",
            )
        )
    table.extend(_rounds_two(result))
    return table


def _rounds_two(result: dict[str, Any]) -> list[Row]:
    """Cold users, holds, grants, the chain and expiry: each beside its baseline."""
    table: list[Row] = []
    cold = result.get("cold")
    if cold and "ratio" in cold:
        ratio = cold["ratio"]
        table.append(
            Row(
                "spends/s over 1,000,000 users (cold), vs over 10,000 (generated alike)",
                _num(_get(cold, "cold", "spends_per_second")) + _errors(cold["cold"]),
                _num(_get(cold, "warm", "spends_per_second")) + _errors(cold["warm"]),
                "n/a" if ratio is None else f"{ratio:.2f}x",
                ">= 0.9x",
                _met(None if ratio is None else ratio >= 0.9),
            )
        )
        p99 = _get(cold, "cold", "p99_ms")
        table.append(
            Row(
                "latency p99 at 64 clients, 1,000,000 users",
                f"{_num(p99, 1)} ms",
                f"{_num(_get(cold, 'warm', 'p99_ms'), 1)} ms",
                "",
                f"<= {P99_GOAL_MS:.0f} ms",
                _met(None if p99 is None else p99 <= P99_GOAL_MS),
            )
        )
    replies = result.get("replies")
    if replies and "replies" in replies:
        rate = _get(replies, "replies", "replies_per_second")
        spends = _get(replies, "spends", "spends_per_second")
        ratio = replies.get("ratio")
        table.append(
            Row(
                "AI replies/s (hold, then settle), 10,000 users, vs spends/s",
                _num(rate),
                _num(spends),
                "n/a" if ratio is None else f"{ratio:.2f}x",
                ">= 0.45x",
                _met(None if ratio is None else ratio >= 0.45),
            )
        )
        p99 = _get(replies, "replies", "p99_ms")
        table.append(
            Row(
                "latency p99 of a reply's commands at 64 clients",
                f"{_num(p99, 1)} ms",
                "",
                "",
                "<= 50 ms",
                _met(None if p99 is None else p99 <= 50),
            )
        )
    writer = result.get("writer") or {}
    for key, title, goal in (
        ("chain", "writer spends/s with the hash chain, vs without", 0.95),
        ("grants", "writer spends/s, 20 active grants per user, vs one", 0.9),
    ):
        pair = writer.get(key)
        if pair:
            table.append(
                Row(
                    title,
                    _num(pair.get("scenario_per_second")),
                    _num(pair.get("baseline_per_second")),
                    f"{pair['ratio']:.2f}x",
                    f">= {goal}x",
                    _met(pair["ratio"] >= goal),
                )
            )
    expiry = writer.get("expiry")
    if expiry:
        rate = expiry.get("grants_per_second")
        table.append(
            Row(
                f"grants expired/s, {expiry['grants']:,} at one instant",
                _num(rate),
                "",
                "",
                ">= 20,000/s",
                _met(None if rate is None else rate >= 20_000),
            )
        )
    table += _webhooks(result.get("webhooks") or {})
    verify = result.get("verify")
    if verify:
        rate = verify.get("events_per_second")
        table.append(
            Row(
                f"ledger verify events/s ({verify['events']:,} events)",
                _num(rate),
                f"{_num(verify.get('peak_rss_mb'))} MB peak",
                "",
                ">= 100,000/s",
                _met(None if rate is None else rate >= 100_000),
            )
        )
    return table


def _webhooks(hooks: dict[str, Any]) -> list[Row]:
    """Spends with three endpoints beside none; delivery lag, commit to receipt."""
    table: list[Row] = []
    ratio = hooks.get("ratio")
    if ratio is not None:
        table.append(
            Row(
                "spends/s with three webhook endpoints, vs none",
                _num(_get(hooks, "spends_with_three_endpoints", "spends_per_second")),
                _num(_get(hooks, "spends_without_endpoints", "spends_per_second")),
                f"{ratio:.2f}x",
                ">= 0.9x",
                _met(ratio >= 0.9),
            )
        )
    for key, rate, goal in (
        ("lag_at_1000_per_second", "1,000", 250.0),
        ("lag_at_200_per_second", "200", None),
    ):
        lag = hooks.get(key)
        if not lag:
            continue
        p99 = lag.get("delivery_lag_p99_ms")
        table.append(
            Row(
                f"webhook delivery lag p50 / p99 at {rate} commands/s",
                f"{_num(lag.get('delivery_lag_p50_ms'))} / {_num(p99)} ms",
                f"{_num(lag.get('achieved_rate'))}/s achieved, "
                f"{_num(lag.get('never_delivered'))} never delivered",
                "",
                "" if goal is None else f"p99 <= {goal:.0f} ms",
                "" if goal is None else _met(None if p99 is None else p99 <= goal),
            )
        )
    return table


def markdown(table: Sequence[Row]) -> str:
    lines = [
        "| scenario | ledger | baseline | ratio | goal | met? |",
        "|---|---:|---:|---:|---|---|",
    ]
    lines.extend(
        f"| {r.scenario} | {r.ledger} | {r.baseline} | {r.ratio} | {r.goal} | {r.met} |"
        for r in table
    )
    return "\n".join(lines)


def details(result: dict[str, Any]) -> str:
    """Every system's numbers, with the CPU (in cores) each part used meanwhile:
    the server process, the ledger's projector, PostgreSQL, wrk, and anyone else."""
    lines = [
        "| workload | system | spends/s | p50 ms | p99 ms | max ms | errors | "
        "server CPU | projector CPU | PostgreSQL CPU | wrk CPU | others' CPU |",
        "|---|---|" + "---:|" * 10,
    ]
    for workload in WORKLOADS:
        for name, system in (_get(result, "http", workload.name) or {}).items():
            if "spends_per_second" not in system:
                continue
            errors = (system.get("non_2xx") or 0) + (system.get("socket_errors") or 0)
            kids = system.get("children_cpu_cores") if name == "ledger" else None
            cells = [
                _num(system["spends_per_second"]),
                _num(system.get("p50_ms"), 1),
                _num(system.get("p99_ms"), 1),
                _num(system.get("max_ms"), 1),
                f"{errors:,.0f}",
                _num(system.get("server_cpu_cores"), 2),
                "" if kids is None else _num(kids, 2),
                _num(system.get("postgres_cpu_cores"), 2),
                _num(system.get("wrk_cpu_cores"), 2),
                _num(system.get("others_cpu_cores"), 2),
            ]
            lines.append(
                f"| {workload.title} | {LABELS.get(name, name)} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


def capacity(result: dict[str, Any]) -> str:
    """What one spend costs the ledger's parts, in CPU microseconds, and how
    long the events table's lock was held per batch: what a capacity estimate
    rests on."""
    lines = [
        "| workload | spends/s | API µs/spend | projector µs/spend | PostgreSQL µs/spend | "
        "batches/s | spends/batch | lock held per batch ms | lock busy |",
        "|---|" + "---:|" * 8,
    ]
    for workload in WORKLOADS:
        ledger = _get(result, "http", workload.name, "ledger")
        if not ledger or not ledger.get("spends_per_second"):
            continue
        rate = ledger["spends_per_second"]
        batches = ledger.get("batches") or {}

        def per_spend(key: str, rate: float = rate, ledger: dict[str, Any] = ledger) -> str:
            cores = ledger.get(key)
            return "" if cores is None else _num(1e6 * cores / rate)

        cells = [
            _num(rate),
            per_spend("server_cpu_cores"),
            per_spend("children_cpu_cores"),
            per_spend("postgres_cpu_cores"),
            _num(batches.get("batches_per_second")),
            _num(batches.get("commands_per_batch"), 1),
            _num(batches.get("batch_ms"), 2),
            "" if batches.get("lock_busy") is None else f"{100 * batches['lock_busy']:.0f}%",
        ]
        lines.append(f"| {workload.title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


# -- medians over runs ---------------------------------------------------------------


def combine(runs: Sequence[Any]) -> Any:
    """The median of each number found in every run; anything else from the first."""
    first = runs[0]
    if isinstance(first, dict):
        return {
            key: combine([run[key] for run in runs if isinstance(run, dict) and key in run])
            for key in first
        }
    numbers = [run for run in runs if isinstance(run, int | float) and not isinstance(run, bool)]
    if len(numbers) == len(runs) and not isinstance(first, bool):
        return statistics.median(numbers)
    return first


KEY_NUMBERS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    *[
        (
            f"spends/s {w.title}: {LABELS[s]}",
            lambda r, w=w, s=s: _get(r, "http", w.name, s, "spends_per_second"),
        )
        for w in WORKLOADS
        for s in ("ledger", *BASELINES)
    ],
    *[
        (f"p99 ms {w.title}: ledger", lambda r, w=w: _get(r, "http", w.name, "ledger", "p99_ms"))
        for w in WORKLOADS
    ],
    ("projector lag p50 ms", lambda r: _get(r, "lag", "lag_p50_ms")),
    ("projector lag p99 ms", lambda r: _get(r, "lag", "lag_p99_ms")),
    ("rebuild events/s", lambda r: _get(r, "rebuild", "rebuild", "events_per_second")),
    ("raw read rows/s", lambda r: _get(r, "rebuild", "raw_read", "rows_per_second")),
    ("rebuild peak MB", lambda r: _get(r, "rebuild", "rebuild", "peak_rss_mb")),
    ("audit events/s", lambda r: _get(r, "rebuild", "audit", "events_per_second")),
    ("spends/s 1,000,000 users (cold)", lambda r: _get(r, "cold", "cold", "spends_per_second")),
    ("spends/s 10,000 users (warm)", lambda r: _get(r, "cold", "warm", "spends_per_second")),
    ("p99 ms 1,000,000 users (cold)", lambda r: _get(r, "cold", "cold", "p99_ms")),
    ("ledger verify events/s", lambda r: _get(r, "verify", "events_per_second")),
    ("make bench seconds", lambda r: r.get("seconds")),
]


def runs_table(runs: Sequence[dict[str, Any]], names: Sequence[str]) -> str:
    lines = [
        "| number | " + " | ".join(names) + " | median |",
        "|---|" + "---:|" * (len(names) + 1),
    ]
    for title, pick in KEY_NUMBERS:
        values = [pick(run) for run in runs]
        present = [v for v in values if v is not None]
        middle = statistics.median(present) if present else None
        digits = 1 if "ms" in title or "MB" in title else 0
        lines.append(
            f"| {title} | "
            + " | ".join(_num(v, digits) for v in values)
            + f" | {_num(middle, digits)} |"
        )
    return "\n".join(lines)


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(path.read_bytes())
    return data


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.report")
    parser.add_argument("files", nargs="+", type=Path, help="bench/results/*.json")
    args = parser.parse_args(argv)
    runs = [load(path) for path in args.files]
    medians = combine(runs)
    print(f"Medians of {len(runs)} runs\n")
    print(markdown(rows(medians)))
    print()
    print(details(medians))
    print()
    print(capacity(medians))
    print()
    print(runs_table(runs, [path.stem for path in args.files]))


if __name__ == "__main__":
    main()
