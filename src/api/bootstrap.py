"""The composition root: the one place that wires the ledger, the projections and
the edges together. `build_services` makes what an API process needs, once;
`tools` what a CLI command needs. Tests build their own here, differently."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from api.embedded import start as start_embedded
from api.http.metrics import Metrics
from api.http.reads import Reads
from api.integrations import catalog
from api.integrations.stripe import StripeWebhook
from api.keys import Keyring, Role, generated_admin_key
from api.settings import Settings
from ledger.application import Ledger
from ledger.clock import Clock, clock_from
from ledger.db import REPLICA_CONNECT_TIMEOUT, Database, Table, advisory_lock, missing
from ledger.writer import CommandWriter
from projections.log import EventLog
from projections.tables import tables as read_side_tables
from projections.users import UsersProjection
from projections.views import present

log = logging.getLogger(__name__)


def resolve_database(settings: Settings) -> Database:
    """LEDGER_DATABASE_URL if set, else the embedded server in LEDGER_HOME."""
    if settings.database_url:
        return Database(settings.database_url)
    return start_embedded(settings.home)


def all_tables(ledger: Ledger, projection: UsersProjection | None = None) -> list[Table]:
    """Every table, write side first."""
    return [*ledger.tables(), *read_side_tables(ledger, projection)]


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
        ledger = Ledger.open(database)
        try:
            wanted = all_tables(ledger, projection)
            if not missing(conn, wanted):
                return  # no DDL, and so no lock taken, when there is nothing to do
            with advisory_lock(conn, "ledger:init"):
                for table in wanted:
                    table.create(conn)
        finally:
            ledger.close()


def missing_tables(conn: psycopg.Connection[Any], database: Database) -> list[str]:
    """Those of the ledger's tables the database does not have."""
    ledger = Ledger.open(database)
    try:
        return missing(conn, all_tables(ledger))
    finally:
        ledger.close()


#: Refusals by a running server that waiting will not cure (as PostgreSQL words
#: them, in its default English messages).
_LASTING = ("does not exist", "authentication failed", "no pg_hba.conf entry")


def _will_not_change(error: psycopg.OperationalError) -> bool:
    return any(words in str(error) for words in _LASTING)


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
    (api.supervisor): sharing the API's interpreter, its database round trips
    would contend with the event loop for the GIL."""

    settings: Settings
    database: Database
    ledger: Ledger
    writer: CommandWriter
    keyring: Keyring
    metrics: Metrics
    projection: UsersProjection
    #: The pool for the primary's reads that run on threads (projections,
    #: readiness, metrics, rebuild requests, the chain's head): bounded, so
    #: that a burst of them cannot use up the server's connections.
    pool: ConnectionPool[psycopg.Connection[Any]]
    #: The same for the queries that may go to a read replica (history,
    #: audits): the replica's pool, or `pool` itself without one.
    replica_pool: ConnectionPool[psycopg.Connection[Any]]
    #: History reads, on `replica_pool` (and `pool` while a replica is away).
    log: EventLog
    #: The point reads on the event loop, and read-your-writes.
    reads: Reads
    #: What tells the time: the writer's, and every read that shows expiry as of now.
    clock: Clock
    #: Stripe's deliveries, if LEDGER_STRIPE_WEBHOOK_SECRETS is set.
    stripe: StripeWebhook | None = None

    async def start(self) -> None:
        self.pool.open(wait=False)
        if self.replica_pool is not self.pool:
            self.replica_pool.open(wait=False)
        await self.reads.open()
        await self.writer.start()

    async def stop(self) -> None:
        await self.writer.stop()
        await self.reads.close()
        if self.replica_pool is not self.pool:
            self.replica_pool.close()
        self.pool.close()
        self.ledger.close()


def build_services(
    settings: Settings, database: Database, *, projection: UsersProjection | None = None
) -> Services:
    projection = projection or UsersProjection()
    ledger = Ledger.open(database)
    metrics = Metrics()
    clock = clock_from(settings.clock_offset_file)
    writer = CommandWriter(
        ledger,
        database,
        present,
        clock=clock,
        max_batch=settings.group_commit_max_batch,
        window=settings.group_commit_window_ms / 1000,
        cache_size=settings.cache_size,
        on_batch=metrics.on_batch,
    )
    keys, _ = keyring(settings)
    pool = database.read_pool(settings.pool_size)
    replica = Database(settings.read_database_url) if settings.read_database_url else None
    replica_pool = (
        replica.read_pool(settings.pool_size, timeout=REPLICA_CONNECT_TIMEOUT)
        if replica is not None
        else pool
    )
    log_ = EventLog(ledger, replica_pool, pool if replica is not None else None)
    reads = Reads(database, projection.name, settings.pool_size, replica)
    return Services(
        settings,
        database,
        ledger,
        writer,
        keys,
        metrics,
        projection,
        pool,
        replica_pool,
        log_,
        reads,
        clock,
        stripe_webhook(settings),
    )


def stripe_webhook(settings: Settings) -> StripeWebhook | None:
    """Stripe's webhook, as configured: its secrets and its catalogue, checked
    whole (catalog.CatalogError names every mistake, by SKU and field)."""
    if not settings.stripe_webhook_secrets:
        return None
    if settings.stripe_catalog is None:
        raise catalog.CatalogError(
            "LEDGER_STRIPE_WEBHOOK_SECRETS is set, but LEDGER_STRIPE_CATALOG is not: "
            "name the TOML file of what each SKU buys"
        )
    webhook = StripeWebhook.of(
        settings.stripe_webhook_secrets, catalog.load(settings.stripe_catalog)
    )
    if not webhook.secrets:
        raise catalog.CatalogError("LEDGER_STRIPE_WEBHOOK_SECRETS names no secret")
    return webhook


@dataclass(frozen=True)
class Tools:
    """What a CLI command needs: the database, the ledger's application, and
    history reads on a small pool."""

    database: Database
    ledger: Ledger
    log: EventLog


@contextlib.contextmanager
def tools(database: Database) -> Iterator[Tools]:
    ledger = Ledger.open(database)
    pool = database.read_pool(2)
    pool.open(wait=False)
    try:
        yield Tools(database, ledger, EventLog(ledger, pool))
    finally:
        pool.close()
        ledger.close()
