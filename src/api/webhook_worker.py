"""The webhooks' process: the outbox (one active per database, like the
projector; others stand by) and a sender (one per process: senders share the
work). Started by each projector process (`ledger serve`, `ledger project`)
unless LEDGER_WEBHOOKS is off, and stopped with it."""

from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta

from api.collector import tune_garbage_collector
from api.integrations.webhooks.safety import Policy
from api.integrations.webhooks.sender import Sender
from api.settings import Settings
from api.supervisor import configure_logging, open_when_reachable, stop_with_parent
from ledger.application import Ledger
from ledger.clock import clock_from
from ledger.db import Database
from projections.webhooks.outbox import Outbox


def webhooks(database: Database, ledger: Ledger, settings: Settings) -> tuple[Outbox, Sender]:
    policy = Policy(settings.webhooks_allow_http, settings.webhooks_allow_private)
    clock = clock_from(settings.clock_offset_file)
    sender = Sender(
        database,
        policy=policy,
        clock=clock,
        per_endpoint=settings.webhooks_per_endpoint,
        concurrency=settings.webhooks_concurrency,
        timeout=settings.webhooks_timeout_seconds,
    )
    retention = timedelta(days=settings.webhooks_retention_days)
    outbox = Outbox(database, ledger, poll_interval=0.5, clock=clock, retention=retention)
    return outbox, sender


def run_webhooks(database: Database, settings: Settings, stop: threading.Event) -> None:
    """Lead (or stand by as) the outbox, and send, until `stop` is set. Waits
    for PostgreSQL if it is away."""
    ledger = open_when_reachable(database, stop, "webhooks")
    if ledger is None:
        return
    outbox, sender = webhooks(database, ledger, settings)
    outbox.start()
    sender.start()
    try:
        stop.wait()
    finally:
        sender.stop()
        outbox.stop()
        ledger.close()


def webhooks_process(url: str, parent: int) -> None:
    """The entry point of the webhooks' child process. It stops on SIGTERM or
    SIGINT, and when its parent is gone (even by kill -9)."""
    settings = Settings()
    configure_logging(settings.log_level)
    _lower_priority(settings.webhooks_nice)
    tune_garbage_collector(settings.gc_threshold)
    run_webhooks(Database(url), settings, stop_with_parent(parent))


def _lower_priority(nice: int) -> None:
    """Deliveries yield the CPU to commands and the projector: messages wait
    in the outbox, in order, until there is CPU to send them."""
    if nice <= 0:
        return
    try:
        os.nice(nice)
    except OSError as e:  # not allowed here: deliveries share the CPU equally
        logging.getLogger(__name__).warning("the webhooks process keeps its priority: %s", e)
