"""Prometheus metrics: commands by type and outcome, their latency, group commit
batches, and the projection's position, head and lag (read at scrape time).

With several API processes behind one port (`ledger serve --workers N`), a
scrape reaches any one of them, so each process writes its counts to files in
PROMETHEUS_MULTIPROC_DIR and every scrape sums them all: the totals are the
server's, whichever process answers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from projections.overview import Overview

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_STATUSES = ("running", "rebuilding", "stopped", "failed")

disable_created_metrics()  # type: ignore[no-untyped-call]


#: Set (by `ledger serve --workers N`, or by whoever runs the processes) to
#: share counts between processes.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # prometheus_client chose per-process files or memory when it was
        # imported, by the same variable.
        self.shared_dir = os.environ.get(MULTIPROCESS_DIR)
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
        self.stripe_deliveries = Counter(
            "ledger_stripe_deliveries_total",
            "Stripe webhook deliveries, by event type and outcome (applied, ignored, rejected, "
            "waiting, duplicate, invalid-signature, invalid-payload, or the problem type).",
            ["type", "outcome"],
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

    def delivered(self, event_type: str, outcome: str) -> None:
        """A Stripe delivery, and what became of it."""
        self.stripe_deliveries.labels(event_type, outcome).inc()

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self, projections: list[Overview], webhooks: WebhookFigures | None = None) -> bytes:
        if self.shared_dir:
            commands = CollectorRegistry()
            MultiProcessCollector(commands, path=self.shared_dir)  # type: ignore[no-untyped-call]
        else:
            commands = self.registry
        read_now = CollectorRegistry()
        read_now.register(_Projections(projections))
        if webhooks is not None:
            read_now.register(_Webhooks(webhooks))
        return generate_latest(commands) + generate_latest(read_now)


@dataclass(frozen=True)
class WebhookFigures:
    """Webhook messages by status, and per endpoint: how many wait, and the
    age in seconds of the oldest event among them (0 when none waits)."""

    by_status: dict[str, int]
    endpoints: list[tuple[str, int, float]]


class _Webhooks(Collector):
    def __init__(self, figures: WebhookFigures) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        messages = GaugeMetricFamily(
            "ledger_webhook_messages",
            "Webhook messages by status: pending (queued), succeeded (delivered), failed.",
            labels=["status"],
        )
        for status in ("pending", "succeeded", "failed"):
            messages.add_metric([status], self.figures.by_status.get(status, 0))
        pending = GaugeMetricFamily(
            "ledger_webhook_endpoint_pending",
            "Messages waiting for each endpoint.",
            labels=["endpoint"],
        )
        lag = GaugeMetricFamily(
            "ledger_webhook_endpoint_lag_seconds",
            "Age of the oldest event whose message still waits for each endpoint.",
            labels=["endpoint"],
        )
        for endpoint, count, seconds in self.figures.endpoints:
            pending.add_metric([endpoint], count)
            lag.add_metric([endpoint], seconds)
        yield from (messages, pending, lag)


class _Projections(Collector):
    """The projections' position, head, lag and status, as read for this scrape
    (from the database, so the same whichever process answers)."""

    def __init__(self, projections: list[Overview]) -> None:
        self.projections = projections

    def collect(self) -> Iterator[Metric]:
        position = GaugeMetricFamily(
            "ledger_projection_position", "Last position applied.", labels=["projection"]
        )
        head = GaugeMetricFamily(
            "ledger_projection_head", "Newest position in the event log.", labels=["projection"]
        )
        lag = GaugeMetricFamily(
            "ledger_projection_lag", "Events recorded but not yet applied.", labels=["projection"]
        )
        status = GaugeMetricFamily(
            "ledger_projection_status",
            "1 for the projection's current status.",
            labels=["projection", "status"],
        )
        for p in self.projections:
            position.add_metric([p.name], p.position)
            head.add_metric([p.name], p.head)
            lag.add_metric([p.name], p.lag)
            for name in _STATUSES:
                status.add_metric([p.name, name], 1 if p.status == name else 0)
        yield from (position, head, lag, status)
