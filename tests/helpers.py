"""Small helpers shared by the integration, end-to-end and reliability tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from ledger.db import Database
from projections import status as st


def projection_position(database: Database, name: str = "users") -> int:
    with database.connect() as conn:
        return st.read_position(conn, name, lock=False)


def head(database: Database) -> int:
    with database.connect() as conn:
        return st.head(conn)


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


def rows(database: Database, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement; its rows, if it returns any."""
    with database.connect() as conn:
        cursor = conn.execute(query, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []
