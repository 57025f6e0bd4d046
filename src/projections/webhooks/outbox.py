"""The outbox: follows the global log, and turns each event into one message
per subscribed endpoint (with `balance.depleted` / `balance.low` where the
user's state after it says so).

Exactly once into the outbox: each batch is one transaction that reads its
tracking position FOR UPDATE, queues the messages of the events after it and
moves the position, then commits (as the projector does). A crash anywhere
leaves all of it or none; a message met twice (it cannot be, but) has the
same id and is left as it was.

The state before each event comes from the one fold: kept from the event
before, or replayed from the user's history at the position before it. One
outbox is active per database (projections.follower); others stand by. It is
never on the command path: commands do not wait for it.

When idle, at most once a minute by its clock, the active outbox deletes the
messages done longer ago than the retention (projections.webhooks.retention),
a batch at a time, between batches of new events.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from ledger import events_table
from ledger.application import Ledger, evolve
from ledger.clock import Clock, system_clock
from ledger.db import Database, advisory_key
from ledger.domain import UserState
from projections import status as st
from projections.follower import Follower
from projections.history import replay_users
from projections.projector import decode_rows
from projections.webhooks import endpoints_table, messages_table, retention
from projections.webhooks.messages import Message, body, message_id, messages_of, subscribed

log = logging.getLogger(__name__)

#: Its tracking position's name, in the projections' tracking table.
TRACKING_NAME = "webhooks-outbox"
#: Users whose state after their last event is kept between batches.
_KEPT_STATES = 200_000
#: How often an idle outbox looks for messages past the retention.
PRUNE_EVERY = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class _Endpoint:
    id: str
    event_types: list[str]
    low_balance_threshold: int | None
    created_position: int


class Outbox(Follower):
    def __init__(
        self,
        database: Database,
        ledger: Ledger,
        *,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        clock: Clock = system_clock,
        retention: timedelta | None = timedelta(days=30),
        prune_batch: int = 1000,
    ) -> None:
        """`retention`: how long messages done are kept (None: for ever)."""
        super().__init__(
            database,
            name="webhook outbox",
            lock_key=advisory_key("ledger:webhooks:outbox"),
            channels=(events_table.CHANNEL,),
            poll_interval=poll_interval,
        )
        self.ledger = ledger
        self.batch_size = batch_size
        self.queued = 0
        self.pruned = 0
        self.clock = clock
        self.retention = retention
        self.prune_batch = prune_batch
        self._next_prune: datetime | None = None
        self._tracking = st.tracking_recorder(ledger.datastore)
        self._states: OrderedDict[str, tuple[UserState, int]] = OrderedDict()

    def on_lead(self, conn: psycopg.Connection[Any]) -> bool:
        self._states.clear()
        return True

    def on_lost(self) -> None:
        self._states.clear()

    def work(self, conn: psycopg.Connection[Any]) -> bool:
        try:
            if self._batch(conn):
                return True
        except psycopg.errors.ForeignKeyViolation:
            return True  # an endpoint deleted meanwhile: again, without it
        return self._prune(conn)

    def _prune(self, conn: psycopg.Connection[Any]) -> bool:
        """One batch of the messages past the retention, if it is time to look;
        True if more may be left (new events go first all the same)."""
        if self.retention is None:
            return False
        now = self.clock()
        if self._next_prune is not None and now < self._next_prune:
            return False
        deleted = retention.prune(conn, now - self.retention, self.prune_batch)
        self.pruned += deleted
        if deleted >= self.prune_batch:
            return True
        self._next_prune = now + PRUNE_EVERY
        return False

    def _batch(self, conn: psycopg.Connection[Any]) -> bool:
        with conn.transaction():
            position = st.read_position(conn, TRACKING_NAME, lock=True)
            rows = conn.execute(events_table.AFTER, (position, self.batch_size)).fetchall()
            if not rows:
                return False
            endpoints = [
                _Endpoint(str(i), list(t), th, int(p))
                for i, t, th, p in conn.execute(endpoints_table.SUBSCRIBED).fetchall()
            ]
            last = int(rows[-1][0])
            if endpoints:
                recorded, failure = decode_rows(self.ledger, rows)
                if failure is not None:
                    log.error(
                        "the webhook outbox cannot read the event at position %d: %s",
                        failure.position,
                        failure.message,
                    )
                    if not recorded:
                        return False
                    last = recorded[-1].position
                queued = self._queue(conn, endpoints, recorded)
            else:
                queued = 0  # nobody listens: nothing to decode, and nothing kept
                self._states.clear()
            st.record_position(self._tracking, conn, TRACKING_NAME, last)
            if queued:
                conn.execute("SELECT pg_notify(%s, %s)", (messages_table.CHANNEL, str(last)))
        self.queued += queued
        return len(rows) == self.batch_size

    def _queue(
        self, conn: psycopg.Connection[Any], endpoints: list[_Endpoint], recorded: list[Any]
    ) -> int:
        columns: list[list[Any]] = [[] for _ in range(8)]
        self._recall(conn, recorded)
        for r in recorded:
            user_id = r.event.originator_id
            kept = self._states.get(user_id)
            before = kept[0] if kept is not None else None
            after = evolve(r.event, before)
            self._keep(user_id, after, r.position)
            bodies: dict[Message, str] = {}  # the same for every endpoint
            for endpoint in endpoints:
                if r.position <= endpoint.created_position:
                    continue
                for message in messages_of(r.event, before, after, endpoint.low_balance_threshold):
                    if not subscribed(endpoint.event_types, message.type):
                        continue
                    text = bodies.get(message)
                    if text is None:
                        text = bodies[message] = body(message, r.event, after, r.position)
                    values = (
                        message_id(endpoint.id, r.position, message),
                        endpoint.id,
                        user_id,
                        r.position,
                        message.type,
                        text,
                        r.event.timestamp,
                        r.event.timestamp,
                    )
                    for column, value in zip(columns, values, strict=True):
                        column.append(value)
        if columns[0]:
            conn.execute(messages_table.QUEUE, columns)
            pairs = sorted(set(zip(columns[1], columns[2], strict=True)))
            conn.execute(messages_table.HEADS_LOCK)
            conn.execute(messages_table.MARK_HEADS, ([e for e, _ in pairs], [u for _, u in pairs]))
        return len(columns[0])

    def _recall(self, conn: psycopg.Connection[Any], recorded: list[Any]) -> None:
        """Make sure the state kept of each user of the batch is the one before
        the batch: kept from an earlier batch if it is of an earlier position
        (a batch rolled back leaves later ones), else replayed from the
        history, for all of them in one query."""
        start = recorded[0].position - 1
        users = {r.event.originator_id for r in recorded}
        stale = [u for u in users if (kept := self._states.get(u)) is None or kept[1] > start]
        for user_id in stale:
            self._states.pop(user_id, None)
        if stale:
            replayed = replay_users(self.ledger, conn, stale, start)
            for user_id, (state, position) in replayed.items():
                self._keep(user_id, state, position)

    def _keep(self, user_id: str, state: UserState, position: int) -> None:
        self._states[user_id] = (state, position)
        self._states.move_to_end(user_id)
        if len(self._states) > _KEPT_STATES:
            self._states.popitem(last=False)
