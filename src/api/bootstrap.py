"""The composition root: the one place that wires the ledger, the projections and
the edges together. Tests build their own services here, differently."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import psycopg

from api.auth import Keyring, Role, generated_admin_key
from api.embedded import start as start_embedded
from api.metrics import Metrics
from api.settings import Settings
from ledger.application import Ledger
from ledger.db import Database, advisory_lock
from ledger.writer import CommandWriter
from projections.projector import Projector
from projections.rebuild import BackgroundRebuilds
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
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            log.warning("waiting for PostgreSQL at %s", database.name or database.url)
            time.sleep(1.0)
    with conn, advisory_lock(conn, "ledger:init"):
        ledger = Ledger.open(database, pool_size=1, max_overflow=1)
        try:
            ledger.create_tables()
            create_tables(conn, ledger, projection)
        finally:
            ledger.close()


def keyring(settings: Settings) -> tuple[Keyring, str | None]:
    """The configured keys; without LEDGER_API_KEYS, an admin key generated once
    and kept in LEDGER_HOME. Returns the keyring and a newly made key to show."""
    if settings.api_keys:
        return Keyring.parse(settings.api_keys), None
    key, created = generated_admin_key(settings.home)
    return Keyring({key: Role.ADMIN}), key if created else None


@dataclass
class Services:
    settings: Settings
    database: Database
    ledger: Ledger
    writer: CommandWriter
    projector: Projector | None
    rebuilds: BackgroundRebuilds
    keyring: Keyring
    metrics: Metrics
    projection: UsersProjection

    def start(self) -> None:
        self.ledger.datastore.register_type_adapters()
        self.writer.start()
        if self.projector is not None:
            self.projector.start()

    def stop(self) -> None:
        self.writer.stop()
        if self.projector is not None:
            self.projector.stop()
        self.rebuilds.join(timeout=1.0)
        self.ledger.close()


def build_services(
    settings: Settings,
    database: Database,
    *,
    projection: UsersProjection | None = None,
    run_projector: bool | None = None,
) -> Services:
    projection = projection or UsersProjection()
    ledger = Ledger.open(database, pool_size=settings.pool_size, max_overflow=8)
    metrics = Metrics()
    writer = CommandWriter(
        ledger,
        max_batch=settings.group_commit_max_batch,
        window=settings.group_commit_window_ms / 1000,
        cache_size=settings.cache_size,
        on_batch=metrics.on_batch,
    )
    rebuilds = BackgroundRebuilds(database, ledger, projection)
    projector = None
    if settings.projector if run_projector is None else run_projector:
        projector = Projector(
            database,
            ledger,
            projection,
            batch_size=settings.projector_batch_size,
            start_rebuild=rebuilds.request,
        )
    keys, _ = keyring(settings)
    return Services(
        settings, database, ledger, writer, projector, rebuilds, keys, metrics, projection
    )
