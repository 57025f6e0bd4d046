"""Small helpers shared by the integration, end-to-end and reliability tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from ledger import events_table
from ledger.application import Ledger
from ledger.db import Database
from ledger.writer.threaded import ThreadedWriter
from projections import status as st
from projections.audit import UserAudit, audit_user
from projections.projector import Projector
from projections.views import present

T = TypeVar("T")


def projection_position(database: Database, name: str = "users") -> int:
    with database.connect() as conn:
        return st.read_position(conn, name, lock=False)


def head(database: Database) -> int:
    with database.connect() as conn:
        return events_table.head(conn)


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {condition}")
        time.sleep(every)


def wait_caught_up(database: Database, timeout: float = 30.0) -> None:
    """Until the projection has applied every event recorded so far."""
    target = head(database)
    wait_until(lambda: projection_position(database) >= target, timeout)


def ledger_process(
    *args: str, database: Database, env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.Popen[bytes]:
    """`ledger <args>` in a child process, on `database`."""
    full_env = {**os.environ, "LEDGER_DATABASE_URL": database.url, "LEDGER_LOG_LEVEL": "warning"}
    full_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", *args],
        env=full_env,
        stdout=kwargs.pop("stdout", subprocess.DEVNULL),
        stderr=kwargs.pop("stderr", subprocess.DEVNULL),
        **kwargs,
    )


def project_once(database: Database, ledger: Ledger | None = None) -> None:
    """Run a projector until it has applied every event recorded so far."""
    opened = Ledger.open(database) if ledger is None else ledger
    projector = Projector(database, opened, poll_interval=0.1)
    projector.start()
    try:
        wait_caught_up(database)
    finally:
        projector.stop()
        if ledger is None:
            opened.close()


def rows(database: Database, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement; its rows, if it returns any."""
    with database.connect() as conn:
        cursor = conn.execute(query, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def record_unreadable_event(
    database: Database,
    user_id: str,
    version: int,
    event_type: str = "CreditsExpired",
    recorded_at: datetime | None = None,
    **fields: Any,
) -> None:
    """Append to a user's stream an event this release cannot read or apply, as
    a newer release might record it during a rolling deploy: by default, of a
    type this release does not know, and recorded now."""
    state = {
        "timestamp": (recorded_at or datetime.now(UTC)).isoformat(),
        "cause": None,
        **(fields or {"amount": 1}),
    }
    rows(
        database,
        "INSERT INTO ledger_events (originator_id, originator_version, topic, state) "
        "VALUES (%s, %s, %s, %s)",
        (user_id, version, f"ledger.domain:User.{event_type}", json.dumps(state).encode()),
    )


class BackgroundWriter(ThreadedWriter):
    """The ledger's threaded writer, showing answers as the API does."""

    def __init__(self, ledger: Ledger, database: Database, **options: Any) -> None:
        super().__init__(ledger, database, present, **options)


API_KEYS = {"admin": "test-admin-key", "service": "test-service-key", "reader": "test-reader-key"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServedLedger:
    """`ledger serve` in a child process, on a free port of 127.0.0.1: the real
    server, as a user runs it (API process plus projector process)."""

    def __init__(
        self,
        database: Database,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.database = database
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "LEDGER_API_KEYS": ",".join(f"{role}:{key}" for role, key in API_KEYS.items()),
            **(env or {}),
        }
        self.args = list(args)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ServedLedger:
        self.process = ledger_process(
            "serve", "--port", str(self.port), *self.args, database=self.database, env=self.env
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"ledger serve exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Stop it (SIGKILL stops it as a crash would, leaving its projector
        process to notice and stop within a second)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> ServedLedger:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def headers(self, role: str = "admin", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEYS[role]}", **extra}


def audit(database: Database, ledger: Ledger, user_id: str) -> UserAudit | None:
    with database.connect() as conn:
        return audit_user(conn, ledger, user_id)


class MovableClock:
    """A clock that tests move: the system's, plus an offset. In-process it is
    called; for a served ledger, the offset is written to the file given as
    LEDGER_CLOCK_OFFSET_FILE, which every process of that ledger reads."""

    def __init__(self, path: Path | None = None, *, frozen: bool = False) -> None:
        """`frozen`: time stands still but for `advance` (in-process only)."""
        self.path = path
        self.offset = 0.0
        self._frozen_at = datetime.now(UTC) if frozen else None
        self._write()

    def __call__(self) -> datetime:
        base = self._frozen_at or datetime.now(UTC)
        return base + timedelta(seconds=self.offset)

    def advance(self, seconds: float) -> datetime:
        self.offset += seconds
        self._write()
        return self()

    def _write(self) -> None:
        if self.path is not None:  # at once: a reader never sees half a number
            draft = self.path.with_suffix(".draft")
            draft.write_text(f"{self.offset}\n")
            os.replace(draft, self.path)
