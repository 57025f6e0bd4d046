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
before it is looked at again: the position it recorded at (known reached once
the projector's own position has passed it), or, for a row that says a user is
due when nothing is (a table behind, or edited by hand), a change of the row,
unless the user's next instant as the writer saw it comes first. A stale row
costs one look, not a loop. The users passed over are filtered out of the
rows the query returns (it asks for as many more), not by the query itself:
PostgreSQL would compare every due row with the list.

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
from projections import status as st
from projections.follower import Follower
from projections.users import UsersProjection
from projections.users_table import LIVE_SCHEMA, TABLE_NAME

log = logging.getLogger(__name__)

#: Users due, soonest first: as many as the worker may pass over, and a batch.
DUE = (
    f"SELECT id, position FROM {LIVE_SCHEMA}.{TABLE_NAME} "
    "WHERE next_due_at <= %s ORDER BY next_due_at LIMIT %s"
)

#: Catch-ups per transaction at most: the events table's lock is held for
#: about as long as a batch of the API's commands holds it.
_MOST_PER_TRANSACTION = 100

#: Users recorded for and not yet projected, at most: past this, the worker
#: waits for the projector.
_RECORDED = 10_000

#: Past this many users passed over, the oldest are forgotten (a row that
#: never changes, say): each costs one more look at most.
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
        self.looked_in_vain = 0  # users woken with nothing due
        # Caught up, until the projector has applied it: user id -> (the
        # position recorded at, the user's next instant as the writer saw it).
        self._recorded: dict[str, tuple[int, datetime | None]] = {}
        # Woken in vain: user id -> (its row's position then, its next instant).
        self._passed_over: dict[str, tuple[int, datetime | None]] = {}
        self._projection = UsersProjection()

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
        now = self.clock()
        projected = st.read_position(conn, self._projection.name, lock=False)
        self._recorded = {u: r for u, r in self._recorded.items() if r[0] > projected}
        if len(self._recorded) >= _RECORDED:
            return False  # the projector is far behind: its table would only mislead
        limit = self.batch_size + len(self._recorded) + len(self._passed_over)
        try:
            rows = conn.execute(DUE, (now, limit)).fetchall()
        except psycopg.errors.UndefinedColumn:
            return False  # a users table of the previous release, until its rebuild
        due = [
            (user_id, position)
            for user_id, position in ((str(u), int(p)) for u, p in rows)
            if self._to_wake(user_id, position, now)
        ][: self.batch_size]
        if not due:
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
                self._pass_over(
                    user_id, position, None if next_at is None else datetime.fromisoformat(next_at)
                )
            elif isinstance(result, Exception):
                log.warning("what time brings %r could not be recorded: %s", user_id, result)
            else:
                self.recorded += 1
                self._recorded[user_id] = (result.body["position"], result.body["next_due_at"])
        return len(due) == self.batch_size

    def _to_wake(self, user_id: str, position: int, now: datetime) -> bool:
        """Whether a user its row says is due is woken: not while the row is
        behind what the worker recorded for it, nor, for a user woken in vain,
        until the row changes or the user's next instant comes."""
        recorded = self._recorded.get(user_id)
        if recorded is not None and (recorded[1] is None or recorded[1] > now):
            return False
        passed = self._passed_over.get(user_id)
        if passed is None:
            return True
        row_position, next_at = passed
        if position == row_position and (next_at is None or next_at > now):
            return False
        del self._passed_over[user_id]
        return True

    def _pass_over(self, user_id: str, position: int, next_at: datetime | None) -> None:
        if len(self._passed_over) >= _PASSED_OVER:
            for oldest in list(self._passed_over)[: _PASSED_OVER // 2]:
                del self._passed_over[oldest]
        self._passed_over[user_id] = (position, next_at)


def _present(event: UserEvent, state: UserState, position: int) -> dict[str, Any]:
    """A catch-up's answer: where it was recorded, and the user's next instant."""
    return {"position": position, "next_due_at": state.next_due_at}
