"""Prometheus metrics: commands by type and outcome, their latency, group commit
batches, and the projection's position, head and lag (read at scrape time)."""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from projections.overview import Overview

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_STATUSES = ("running", "rebuilding", "stopped", "failed")

disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.commands = Counter(
            "ledger_commands_total",
            "Commands handled, by command and outcome (ok or the problem type).",
            ["command", "outcome"],
            registry=self.registry,
        )
        self.command_seconds = Histogram(
            "ledger_command_duration_seconds",
            "Time from a command's arrival at the writer to its answer.",
            ["command"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "ledger_group_commit_batch_size",
            "Commands per group-commit transaction.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "ledger_group_commit_seconds",
            "Duration of a group-commit transaction.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=self.registry,
        )
        self.position = Gauge(
            "ledger_projection_position",
            "Last position applied.",
            ["projection"],
            registry=self.registry,
        )
        self.head = Gauge(
            "ledger_projection_head",
            "Newest position in the event log.",
            ["projection"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "ledger_projection_lag",
            "Events recorded but not yet applied.",
            ["projection"],
            registry=self.registry,
        )
        self.status = Gauge(
            "ledger_projection_status",
            "1 for the projection's current status.",
            ["projection", "status"],
            registry=self.registry,
        )

        # Label children, looked up once: labels() takes a lock and builds a key.
        self._counters: dict[tuple[str, str], Any] = {}
        self._timers: dict[str, Any] = {}

    def counted(self, command: str, outcome: str) -> None:
        counter = self._counters.get((command, outcome))
        if counter is None:
            counter = self._counters[command, outcome] = self.commands.labels(command, outcome)
        counter.inc()

    def timed(self, command: str, seconds: float) -> None:
        timer = self._timers.get(command)
        if timer is None:
            timer = self._timers[command] = self.command_seconds.labels(command)
        timer.observe(seconds)

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self, projections: list[Overview]) -> bytes:
        for p in projections:
            self.position.labels(p.name).set(p.position)
            self.head.labels(p.name).set(p.head)
            self.lag.labels(p.name).set(p.lag)
            for status in _STATUSES:
                self.status.labels(p.name, status).set(1 if p.status == status else 0)
        return generate_latest(self.registry)
