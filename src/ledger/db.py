"""Where the database is, and how every part of the ledger connects to it."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from ledger.errors import DatabaseUnavailable

#: Seconds to wait for a connection before telling the caller the database is down.
CONNECT_TIMEOUT = 3
#: The same for a read replica, which a read leaves for the primary instead.
REPLICA_CONNECT_TIMEOUT = 1.0
#: Seconds a command waits for the events table's write lock.
LOCK_TIMEOUT = 5
#: Seconds PostgreSQL lets a writer's session sit idle inside a transaction (holding
#: the events table's lock) before it ends the session.
IDLE_IN_TRANSACTION_TIMEOUT = 10
#: Seconds a connection pool goes on retrying a connection that failed, before
#: it frees the slot. psycopg_pool's default (5 minutes, backing off to seconds
#: between tries) leaves a pool with every slot waiting for its next try for a
#: while after PostgreSQL is back; freed at once, the next request connects anew.
POOL_RECONNECT_TIMEOUT = 1.0
#: Seconds a read may run before PostgreSQL cancels it.
READ_TIMEOUT = 30
#: TCP keepalives, the same on both ends: idle seconds, seconds between probes, probes.
_KEEPALIVE = {"idle": 5, "interval": 2, "count": 3}


@dataclass(frozen=True)
class Database:
    """A PostgreSQL database, named by a libpq URL or connection string."""

    url: str

    def conninfo(self, *settings: str, **overrides: str | int) -> str:
        """The URL's connection string, with TCP keepalives on both ends and
        `settings` ("name=value" server settings for the session) added to the
        URL's own options. A network path that goes silent then ends the
        session within seconds, on the client and on the server (which frees
        its locks), instead of after the kernel's two hours.

        JIT compilation is off unless the URL's options turn it on: every
        statement here is an index lookup or a short write, and PostgreSQL
        misjudges some of them (a lateral lookup of many users in a large
        events table) as worth compiling, which takes a hundred milliseconds
        or more each time, under the table lock for a batch's reads."""
        given = conninfo_to_dict(self.url).get("options")
        server = [f"tcp_keepalives_{name}={value}" for name, value in _KEEPALIVE.items()]
        options = " ".join(
            [
                "-c jit=off",
                *([str(given)] if given else []),
                *(f"-c {s}" for s in (*server, *settings)),
            ]
        )
        params: dict[str, str | int] = {
            "connect_timeout": CONNECT_TIMEOUT,
            "keepalives": 1,
            **{f"keepalives_{name}": value for name, value in _KEEPALIVE.items()},
            "tcp_user_timeout": 10_000,
            "options": options,
        }
        params.update(overrides)
        return make_conninfo(self.url, **params)

    def read_conninfo(self) -> str:
        """The connection string of pools that read: reads end after READ_TIMEOUT."""
        return self.conninfo(f"statement_timeout={READ_TIMEOUT}s")

    def with_name(self, dbname: str) -> Database:
        return Database(make_conninfo(self.url, dbname=dbname))

    @property
    def name(self) -> str:
        return str(conninfo_to_dict(self.url).get("dbname") or "")

    def library_env(self, *, pool_size: int = 2, max_overflow: int = 8) -> dict[str, str]:
        """Settings for the eventsourcing library's PostgreSQL persistence."""
        params = conninfo_to_dict(self.url)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": str(params.get("dbname") or params.get("user") or "postgres"),
            "POSTGRES_HOST": str(params.get("host") or "localhost"),
            "POSTGRES_PORT": str(params.get("port") or "5432"),
            "POSTGRES_USER": str(params.get("user") or "postgres"),
            "POSTGRES_PASSWORD": str(params.get("password") or ""),
            "POSTGRES_POOL_SIZE": str(pool_size),
            "POSTGRES_MAX_OVERFLOW": str(max_overflow),
            "POSTGRES_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
            # A session idle inside a transaction holds the event table's lock;
            # PostgreSQL ends it rather than let every writer wait.
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": str(IDLE_IN_TRANSACTION_TIMEOUT),
            # A writer waits this long (seconds) for the events table's lock, then
            # answers "unavailable, retry" rather than hang behind, say, an import.
            "POSTGRES_LOCK_TIMEOUT": str(LOCK_TIMEOUT),
            # The library takes host, port, user and password alone from these;
            # Ledger gives its pool the whole connection string (TLS settings,
            # several hosts, options, keepalives) as well.
            "CONNINFO": self.read_conninfo(),
            "ORIGINATOR_ID_TYPE": "text",
            # Tables are created once, by `ledger db init` under an advisory lock.
            "CREATE_TABLE": "n",
            # Its insert path takes no table lock, so readers could skip events.
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        }

    def connect(self, *, autocommit: bool = True) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.conninfo(), autocommit=autocommit)

    async def connect_async(self, *settings: str) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        """An async connection in autocommit mode, with `settings` for its session."""
        return await psycopg.AsyncConnection.connect(self.conninfo(*settings), autocommit=True)

    def read_pool(
        self, size: int, *, timeout: float = CONNECT_TIMEOUT
    ) -> ConnectionPool[psycopg.Connection[Any]]:
        """A bounded pool of autocommit connections for the reads that run on
        threads (history, audits, projections, readiness), not yet open. Each
        connection is checked as it is handed out (a round trip, cheap beside
        these reads), so that after PostgreSQL restarts the first read gets a
        new connection instead of a dead one."""
        return ConnectionPool(
            self.read_conninfo(),
            min_size=1,
            max_size=size,
            kwargs={"autocommit": True},
            check=ConnectionPool.check_connection,
            timeout=timeout,
            reconnect_timeout=POOL_RECONNECT_TIMEOUT,
            open=False,
        )

    def async_read_pool(
        self, size: int, *, timeout: float = CONNECT_TIMEOUT
    ) -> AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]:
        """A bounded pool for the API's point reads on the event loop, not yet
        open. Connections are not checked as they are handed out (a round trip
        per read); see `api.http.reads` for how a dead one is met."""
        return AsyncConnectionPool(
            self.read_conninfo(),
            min_size=1,
            max_size=size,
            kwargs={"autocommit": True, "row_factory": dict_row},
            timeout=timeout,
            reconnect_timeout=POOL_RECONNECT_TIMEOUT,
            open=False,
        )


def advisory_key(name: str) -> int:
    """A stable 32-bit advisory lock key for a name."""
    return zlib.crc32(name.encode())


@contextlib.contextmanager
def advisory_lock(conn: psycopg.Connection[tuple[object, ...]], name: str) -> Iterator[None]:
    """Hold a session-level advisory lock while the block runs.

    https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS
    """
    key = advisory_key(name)
    conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    try:
        yield
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


#: Why a transaction gave up waiting for the events table (its lock_timeout).
BUSY = "the ledger is busy (another transaction holds the events table); retry"


def unavailable(error: BaseException) -> DatabaseUnavailable | None:
    """The ledger's word for an error that only a retry can cure (PostgreSQL
    cannot be reached, or is too busy to wait for), or None for any other.
    The one translation of database errors, wherever they are met."""
    if isinstance(error, psycopg.errors.LockNotAvailable):
        return DatabaseUnavailable(BUSY)
    if isinstance(
        error, psycopg.OperationalError | psycopg.InterfaceError | OperationalError | InterfaceError
    ):
        return cannot_reach(error)
    return None


def cannot_reach(error: BaseException) -> DatabaseUnavailable:
    return DatabaseUnavailable(f"the database cannot be reached: {error}")


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Raise `unavailable`'s error in place of the database's."""
    try:
        yield
    except Exception as e:
        translated = unavailable(e)
        if translated is not None:
            raise translated from e
        raise


@dataclass(frozen=True)
class Table:
    """A table, and how it is created if it is missing (on a connection in
    autocommit mode). Every table of the ledger is declared so, by the module
    that owns it, and created by one loop (api.bootstrap.init_database)."""

    name: str
    create: Callable[[psycopg.Connection[Any]], None]

    @classmethod
    def of(cls, name: str, *ddl: str) -> Table:
        """A table created by plain statements (each idempotent: IF NOT EXISTS)."""

        def create(conn: psycopg.Connection[Any]) -> None:
            for statement in ddl:
                conn.execute(statement.encode())

        return cls(name, create)


def missing(conn: psycopg.Connection[Any], tables: Sequence[Table]) -> list[str]:
    """The names of those of `tables` the database does not have."""
    rows = conn.execute(
        "SELECT name FROM unnest(%s::text[]) AS name "
        "WHERE to_regclass(format('public.%%I', name)) IS NULL",
        ([t.name for t in tables],),
    ).fetchall()
    return [str(row[0]) for row in rows]
