"""The expiry worker: what time brings to users with no traffic (holds and
grants expiring, allowances granting their next period), recorded within a
moment of its instant.

It decides nothing itself: it finds the users due (the users table's
`next_due_at`, as the projector last left it) and hands each a CatchUp command
through the writer, which decides under the events table's lock, from the
user's own history, like any command. So each expiry is recorded exactly once
however often the worker, a standby that takes over, or a command meets it
(the first records it; the others find nothing due).

The users table is behind the writer by the projector's lag: a user the worker
has just caught up still reads as due until the projector applies what was
recorded. So the worker remembers the position each user's row must reach
before it is looked at again (the position it recorded at, or, for a row that
says a user is due when nothing is, a table behind or edited by hand, one past
the row's own), unless the user's next instant, as the writer saw it, comes
first. A stale row costs one look, not a loop.

One worker is active per database (projections.follower), in the process that
projects; others stand by.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import psycopg

from ledger.application import Ledger
from ledger.clock import Clock, system_clock
from ledger.commands import CatchUp
from ledger.db import Database, advisory_key
from ledger.domain import TIME, UserEvent, UserState
from ledger.errors import NothingDue
from ledger.writer.batch import Accepted
from ledger.writer.threaded import ThreadedWriter
from projections.follower import Follower
from projections.users_table import LIVE_SCHEMA, TABLE_NAME

log = logging.getLogger(__name__)

#: Users due, except those whose rows have not reached the position awaited
#: before their next instant as the writer saw it.
DUE = (
    f"SELECT u.id, u.position FROM {LIVE_SCHEMA}.{TABLE_NAME} u WHERE u.next_due_at <= %(now)s "
    "AND NOT EXISTS (SELECT FROM unnest(%(ids)s::text[], %(positions)s::bigint[], "
    "%(due)s::timestamptz[]) a(id, position, due) WHERE a.id = u.id "
    "AND u.position < a.position AND (a.due IS NULL OR a.due > %(now)s)) "
    "ORDER BY u.next_due_at LIMIT %(limit)s"
)

#: Of the awaited users, those whose rows have reached the position awaited.
REACHED = (
    f"SELECT u.id FROM {LIVE_SCHEMA}.{TABLE_NAME} u "
    "JOIN unnest(%s::text[], %s::bigint[]) a(id, position) "
    "ON a.id = u.id AND u.position >= a.position"
)

#: Catch-ups per transaction at most: the events table's lock is held for
#: about as long as a batch of the API's commands holds it.
_MOST_PER_TRANSACTION = 100

#: Past this many users awaited, the oldest are forgotten (a row that never
#: changes, say): each costs one more look at most.
_AWAITED = 20_000


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
        self.looked_in_vain = 0  # users woken with nothing due
        # user id -> (the position its row must reach, its next instant)
        self._awaited: dict[str, tuple[int, datetime | None]] = {}

    def on_lead(self, conn: psycopg.Connection[Any]) -> bool:
        if self._writer is None:
            self._writer = ThreadedWriter(
                self.ledger,
                self.database,
                _present,
                clock=self.clock,
                cache_size=10_000,
                max_batch=_MOST_PER_TRANSACTION,
            )
        return True

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        if self._writer is not None:
            self._writer.stop()
            self._writer = None

    def work(self, conn: psycopg.Connection[Any]) -> bool:
        assert self._writer is not None
        if len(self._awaited) >= _AWAITED:
            self._forget_reached(conn)
            self._forget_oldest(_AWAITED // 2)
        try:
            awaited = self._awaited.values()
            rows = conn.execute(
                DUE,
                {
                    "now": self.clock(),
                    "ids": list(self._awaited),
                    "positions": [position for position, _ in awaited],
                    "due": [due for _, due in awaited],
                    "limit": self.batch_size,
                },
            ).fetchall()
        except psycopg.errors.UndefinedColumn:
            return False  # a users table of the previous release, until its rebuild
        due = [(str(u), int(p)) for u, p in rows]
        if not due:
            self._forget_reached(conn)
            return False
        # Submitted one by one, as requests are: the writer reads the users it
        # does not hold ahead of its batches (not under the lock) and commits
        # them in batches of its own size, so that the API's commands wait for
        # the lock no longer than behind one of those.
        futures = [self._writer.submit(CatchUp(user_id), TIME) for user_id, _ in due]
        for (user_id, position), future in zip(due, futures, strict=True):
            try:
                result: Accepted | Exception = future.result()
            except Exception as e:
                result = e
            if isinstance(result, NothingDue):
                self.looked_in_vain += 1
                next_at = (result.facts or {}).get("next_due_at")
                self._awaited[user_id] = (
                    position + 1,
                    None if next_at is None else datetime.fromisoformat(next_at),
                )
            elif isinstance(result, Exception):
                log.warning("what time brings %r could not be recorded: %s", user_id, result)
            else:
                self.recorded += 1
                self._awaited[user_id] = (result.body["position"], result.body["next_due_at"])
        return len(rows) == self.batch_size

    def _forget_reached(self, conn: psycopg.Connection[Any]) -> None:
        """Stop awaiting the users whose rows have reached the position awaited."""
        if not self._awaited:
            return
        positions = [position for position, _ in self._awaited.values()]
        rows = conn.execute(REACHED, (list(self._awaited), positions)).fetchall()
        for (user_id,) in rows:
            del self._awaited[str(user_id)]

    def _forget_oldest(self, keep: int) -> None:
        for user_id in list(self._awaited)[: max(0, len(self._awaited) - keep)]:
            del self._awaited[user_id]


def _present(event: UserEvent, state: UserState, position: int) -> dict[str, Any]:
    """A catch-up's answer: where it was recorded, and the user's next instant."""
    return {"position": position, "next_due_at": state.next_due_at}
