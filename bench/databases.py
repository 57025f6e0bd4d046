"""The database server the bench runs on, and the databases it makes there.

One server for the whole run: LEDGER_DATABASE_URL's if set, else the embedded
one in ./.ledger/. Each scenario gets a database of its own, dropped when the
scenario ends; only the generated histories are kept, under stable names, so
that the next run need not record them again.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from api.bootstrap import resolve_database
from api.settings import Settings
from ledger.db import Database

ROOT = Path(__file__).resolve().parents[1]
RUN_ID = uuid.uuid4().hex[:8]
PREFIX = "ledger_bench"
_OWNER = "made by a bench run of process"


@dataclass(frozen=True)
class Server:
    """A maintenance connection to the run's PostgreSQL server."""

    admin: Database
    kind: str  # "embedded" or "LEDGER_DATABASE_URL"

    @classmethod
    def resolve(cls) -> Server:
        """The server `ledger` itself would use."""
        settings = Settings()
        kind = "LEDGER_DATABASE_URL" if settings.database_url else "embedded"
        return cls(resolve_database(settings).with_name("postgres"), kind)

    def database(self, name: str) -> Database:
        return self.admin.with_name(name)

    def version(self) -> str:
        with self.admin.connect() as conn:
            row = conn.execute("SELECT version()").fetchone()
        return str(row[0]) if row else "?"

    def settings(self, *names: str) -> dict[str, str]:
        with self.admin.connect() as conn:
            return {
                name: str(row[0])
                for name in names
                if (row := conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone())
            }

    def exists(self, name: str) -> bool:
        with self.admin.connect() as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        return row is not None

    def create(self, name: str, *, template: str | None = None) -> Database:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            query += sql.SQL(" TEMPLATE {} STRATEGY FILE_COPY").format(sql.Identifier(template))
        with self.admin.connect() as conn:
            conn.execute(query)
        return self.database(name)

    def drop(self, name: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def rename(self, old: str, new: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(old), sql.Identifier(new)
                )
            )

    def comment(self, name: str) -> str | None:
        with self.admin.connect() as conn:
            row = conn.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                (name,),
            ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def set_comment(self, name: str, text: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(
                sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                    sql.Identifier(name), sql.Literal(text)
                )
            )

    @contextlib.contextmanager
    def scratch(self, label: str, *, template: str | None = None) -> Iterator[Database]:
        """A database of this run for one scenario, dropped when it ends."""
        name = f"{PREFIX}_{RUN_ID}_{label}"
        database = self.create(name, template=template)
        try:
            self.set_comment(name, f"{_OWNER} {os.getpid()}")
            yield database
        finally:
            with contextlib.suppress(psycopg.Error):
                self.drop(name)


def sweep(server: Server) -> list[str]:
    """Drop the scenario databases that runs killed before they could (their
    process is gone); returns their names."""
    with server.admin.connect() as conn:
        rows = conn.execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE datname LIKE %s",
            (f"{PREFIX}_%",),
        ).fetchall()
    dropped = []
    for name, comment in rows:
        owner = str(comment or "")
        pid = owner.rpartition(" ")[2]
        if owner.startswith(_OWNER) and pid.isdigit() and not psutil.pid_exists(int(pid)):
            with contextlib.suppress(psycopg.Error):
                server.drop(str(name))
                dropped.append(str(name))
    return dropped


def scalar(database: Database, query: str) -> int:
    with database.connect() as conn:
        row = conn.execute(query).fetchone()
    value = row[0] if row else None
    return int(str(value)) if value is not None else 0
