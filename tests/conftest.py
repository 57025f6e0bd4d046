"""Fixtures shared by every test that needs PostgreSQL.

Each run uses a database server (LEDGER_DATABASE_URL's, else the embedded one in
./.ledger/) and databases of its own on it: a template with the tables, created
once, and a fresh copy of it for each test that asks for `database`. All of
them are dropped when the run ends.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from api.bootstrap import init_database
from api.embedded import start as start_embedded
from ledger.application import Ledger
from ledger.db import Database
from projections.log import EventLog
from tests.helpers import BackgroundWriter

ROOT = Path(__file__).resolve().parents[1]
RUN_ID = uuid.uuid4().hex[:8]
_counter = itertools.count()


@pytest.fixture(scope="session")
def server() -> Database:
    """A maintenance connection to the run's PostgreSQL server."""
    url = os.environ.get("LEDGER_DATABASE_URL")
    database = Database(url) if url else start_embedded(ROOT / ".ledger")
    return database.with_name("postgres")


def _create(server: Database, name: str, template: str | None = None) -> Database:
    with server.connect() as conn:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        conn.execute(query)
    return server.with_name(name)


def _drop(server: Database, name: str) -> None:
    with server.connect() as conn, contextlib.suppress(psycopg.Error):
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def template(server: Database) -> Iterator[str]:
    """A database with every table, never connected to after set-up."""
    name = f"ledger_test_{RUN_ID}_template"
    init_database(_create(server, name))
    yield name
    _drop(server, name)


def new_database(server: Database, template: str) -> Database:
    return _create(server, f"ledger_test_{RUN_ID}_{next(_counter)}", template)


@pytest.fixture
def empty_database(server: Database) -> Iterator[Database]:
    """A fresh database of this run with no tables at all, dropped after the test."""
    database = _create(server, f"ledger_test_{RUN_ID}_{next(_counter)}")
    yield database
    _drop(server, database.name)


@pytest.fixture
def database(server: Database, template: str) -> Iterator[Database]:
    """A fresh database of this run, with the tables, dropped after the test."""
    database = new_database(server, template)
    yield database
    _drop(server, database.name)


@pytest.fixture
def ledger(database: Database) -> Iterator[Ledger]:
    ledger = Ledger.open(database)
    ledger.datastore.register_type_adapters()
    yield ledger
    ledger.close()


@pytest.fixture
def log(ledger: Ledger, database: Database) -> Iterator[EventLog]:
    """History reads, as the API makes them, on a pool of their own."""
    pool = database.read_pool(2)
    pool.open(wait=True)
    yield EventLog(ledger, pool)
    pool.close()


@pytest.fixture
def writer(ledger: Ledger, database: Database) -> Iterator[BackgroundWriter]:
    writer = BackgroundWriter(ledger, database)
    yield writer
    writer.stop()
