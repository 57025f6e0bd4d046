"""The expiry worker: what time brings to users with no traffic (holds and
grants expiring, allowances granting their next period), recorded within a
moment of its instant.

It decides nothing itself: it finds the users due (the users table's
`next_due_at`, as the projector last left it) and hands each a CatchUp command
through the writer, which decides under the events table's lock, from the
user's own history, like any command. So each expiry is recorded exactly once
however often the worker, a standby that takes over, or a command meets it
(the first records it; the others find nothing due). A row that says a user is
due when nothing is (a table behind, or edited by hand) costs one look, not a
loop: the user is passed over until the row changes.

One worker is active per database (projections.follower), in the process that
projects; others stand by.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from ledger.application import Ledger
from ledger.clock import Clock, system_clock
from ledger.commands import CatchUp
from ledger.db import Database, advisory_key
from ledger.domain import TIME
from ledger.errors import NothingDue
from ledger.writer.threaded import ThreadedWriter
from projections.follower import Follower
from projections.users_table import LIVE_SCHEMA, TABLE_NAME
from projections.views import present

log = logging.getLogger(__name__)

DUE = (
    f"SELECT id, position FROM {LIVE_SCHEMA}.{TABLE_NAME} WHERE next_due_at <= %s "
    "AND NOT (id = ANY(%s)) ORDER BY next_due_at LIMIT %s"
)

#: Users passed over (nothing due) are remembered until their row changes, up to this many.
_PASSED_OVER = 10_000


class ExpiryWorker(Follower):
    def __init__(
        self,
        database: Database,
        ledger: Ledger,
        *,
        clock: Clock = system_clock,
        batch_size: int = 500,
        poll_interval: float = 0.2,
    ) -> None:
        super().__init__(
            database,
            name="expiry worker",
            lock_key=advisory_key("ledger:expiry:leader"),
            poll_interval=poll_interval,
        )
        self.ledger = ledger
        self.clock = clock
        self.batch_size = batch_size
        self.recorded = 0
        self._writer: ThreadedWriter | None = None
        self._passed_over: dict[str, int] = {}

    def on_lead(self, conn: psycopg.Connection[Any]) -> bool:
        if self._writer is None:
            self._writer = ThreadedWriter(
                self.ledger, self.database, present, clock=self.clock, cache_size=10_000
            )
        return True

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        if self._writer is not None:
            self._writer.stop()
            self._writer = None

    def work(self, conn: psycopg.Connection[Any]) -> bool:
        assert self._writer is not None
        try:
            rows = conn.execute(
                DUE, (self.clock(), list(self._passed_over), self.batch_size)
            ).fetchall()
        except psycopg.errors.UndefinedColumn:
            return False  # a users table of the previous release, until its rebuild
        due = [(str(u), int(p)) for u, p in rows]
        if not due:
            self._forget_changed(conn)
            return False
        results = self._writer.execute_together(
            [(CatchUp(user_id), TIME) for user_id, _ in due], timeout=None
        )
        for (user_id, position), result in zip(due, results, strict=True):
            if isinstance(result, NothingDue):
                if len(self._passed_over) >= _PASSED_OVER:
                    self._passed_over.clear()
                self._passed_over[user_id] = position
            elif isinstance(result, Exception):
                log.warning("what time brings %r could not be recorded: %s", user_id, result)
            else:
                self.recorded += 1
                self._passed_over.pop(user_id, None)
        return len(rows) == self.batch_size

    def _forget_changed(self, conn: psycopg.Connection[Any]) -> None:
        """Stop passing over the users whose rows have changed since."""
        if not self._passed_over:
            return
        rows = conn.execute(
            f"SELECT id, position FROM {LIVE_SCHEMA}.{TABLE_NAME} WHERE id = ANY(%s)",
            (list(self._passed_over),),
        ).fetchall()
        now = {str(u): int(p) for u, p in rows}
        for user_id, position in list(self._passed_over.items()):
            if now.get(user_id) != position:
                del self._passed_over[user_id]
