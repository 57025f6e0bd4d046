"""Followers: workers of which one is active per database, the others standing by.

The active one holds a session-level advisory lock on its connection; when that
connection closes (a crash, a kill -9, a network cut), PostgreSQL releases the
lock and a standby takes over within a poll interval. A follower wakes on
LISTEN/NOTIFY channels and polls as a fallback. The users projector, and the
workers that follow it, share this loop.
https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from typing import Any

import psycopg

from ledger.db import Database

log = logging.getLogger(__name__)


class Follower:
    """Lead or stand by, on a connection of its own, until stopped; survive the
    database going away. Subclasses say what leading means (`on_lead`) and do
    the work (`work`)."""

    def __init__(
        self,
        database: Database,
        *,
        name: str,
        lock_key: int,
        channels: Sequence[str] = (),
        poll_interval: float = 1.0,
    ) -> None:
        self.database = database
        self.name = name
        self.lock_key = lock_key
        self.channels = tuple(channels)
        self.poll_interval = poll_interval
        self.is_leader = False
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what a subclass does -------------------------------------------------

    def on_lead(self, conn: psycopg.Connection[Any]) -> bool:
        """Just took the lock: get ready, or return False to give it back."""
        return True

    def work(self, conn: psycopg.Connection[Any]) -> bool:
        """Do a batch of work; True if more is ready at once."""
        raise NotImplementedError

    def on_lost(self) -> None:
        """The connection is gone (and with it the lock): forget what it held."""

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"ledger-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                with self.database.connect() as conn:
                    backoff = 0.2
                    self._serve(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                log.warning("%s lost its database connection: %s", self.name, e)
            except Exception:
                log.exception("%s stopped by an unexpected error; restarting", self.name)
            self.is_leader = False
            self.on_lost()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        for channel in self.channels:
            conn.execute(f"LISTEN {channel}")
        while not self._stop.is_set():
            if not self.is_leader:
                self.is_leader = self._try_lead(conn)
                if not self.is_leader:
                    self.wait(conn)
                    continue
            if not self.work(conn):
                self.wait(conn)

    def _try_lead(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.lock_key,)).fetchone()
        if not (row and row[0]):
            return False
        if not self.on_lead(conn):
            self.step_down(conn)
            return False
        log.info("%s %s is now active", self.name, self.identity)
        return True

    def step_down(self, conn: psycopg.Connection[Any]) -> None:
        """Give the lock back and stand by."""
        conn.execute("SELECT pg_advisory_unlock(%s)", (self.lock_key,))
        self.is_leader = False

    def wait(self, conn: psycopg.Connection[Any]) -> None:
        """Until a notification arrives on one of the channels, or a poll is due."""
        for _ in conn.notifies(timeout=self.poll_interval, stop_after=1):
            break
        for _ in conn.notifies(timeout=0):
            pass  # several notifications wake the follower once
