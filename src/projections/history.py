"""A user's history replayed: the timeline with the state after each event, and
the state as of a time or a version. All by the one fold (`User.Event.evolve`),
from the user's first event, or, deep in a long stream, from the latest
snapshot before the point of interest (ledger.snapshots)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from ledger import events_table
from ledger.application import Ledger, Recorded, evolve
from ledger.domain import UserEvent, UserState
from ledger.errors import HistoryUnreadable
from ledger.snapshots import EVERY, Snapshot
from projections.log import EventLog


@dataclass(frozen=True, slots=True)
class Step:
    """An event, and the user's state right after it."""

    recorded: Recorded
    state: UserState


def timeline(
    log: EventLog,
    user_id: str,
    *,
    after_version: int = 0,
    limit: int | None = None,
    until: datetime | None = None,
) -> tuple[list[Step], bool]:
    """The user's events after `after_version`, oldest first (at most `limit`,
    and recorded at or before `until`), each with the state after it; and
    whether more follow. From the first event when `after_version` is below
    the first snapshot, as an audit needs."""
    start = log.snapshot(user_id, version=after_version) if after_version >= EVERY else None
    state: UserState | None = start.state if start else None
    first = state.version if state else 0
    wanted = None if limit is None else after_version - first + limit
    recorded, more = log.user_page(user_id, after_version=first, limit=wanted, until=until)
    steps = []
    for r in recorded:
        state = evolve(r.event, state)
        if r.event.originator_version > after_version:
            steps.append(Step(r, state))
    return steps, more


def state_at(
    log: EventLog, user_id: str, *, at: datetime | None = None, version: int | None = None
) -> Snapshot | None:
    """The user after every event recorded at or before `at` (an event at
    exactly `at` counts), or up to `version`; None if they did not exist yet."""
    deep = at is not None or version is None or version >= EVERY
    last = log.snapshot(user_id, version=version, at=at) if deep else None
    state: UserState | None = last.state if last else None
    first = state.version if state else 0
    wanted = None if version is None else max(version - first, 0)
    if wanted == 0:
        return last
    for recorded in log.user_events(user_id, after_version=first, limit=wanted, until=at):
        state = evolve(recorded.event, state)
        last = Snapshot(state, recorded.position)
    return last


def replay_user(
    ledger: Ledger, conn: psycopg.Connection[Any], user_id: str, up_to: int
) -> tuple[UserState, int] | None:
    """The user's state from the events at positions up to `up_to`, read on
    `conn` (so in the caller's snapshot), and the position of the last."""
    state: UserState | None = None
    position = 0
    for version, topic, data, notification_id in conn.execute(
        events_table.OF_USER_UP_TO, (user_id, up_to)
    ).fetchall():
        event = ledger.decode_row(user_id, version, topic, data)
        state = evolve(event, state)
        position = notification_id
    return (state, position) if state is not None else None


def replay_users(
    ledger: Ledger, conn: psycopg.Connection[Any], user_ids: list[str], up_to: int
) -> dict[str, tuple[UserState, int]]:
    """Each of some users' state from their events at positions up to `up_to`,
    read on `conn` in one query, and the position of the last (users with no
    event by then are left out)."""
    states: dict[str, tuple[UserState, int]] = {}
    rows = conn.execute(events_table.OF_USERS_UP_TO, (user_ids, up_to)).fetchall()
    for user_id, version, topic, data, notification_id in rows:
        event = ledger.decode_row(user_id, version, topic, data)
        before = states.get(user_id)
        states[user_id] = (evolve(event, before[0] if before else None), notification_id)
    return states


def replay_all(
    ledger: Ledger,
    conn: psycopg.Connection[Any],
    up_to: int,
    *,
    at: datetime | None = None,
    on_event: Callable[[int], None] | None = None,
    on_step: Callable[[UserEvent, UserState, int], None] | None = None,
) -> Iterator[tuple[UserState, int]]:
    """Every user's final state and last position (up to position `up_to`, and
    to the events recorded at or before `at`), in id order, one user at a time,
    streamed from a server-side cursor: memory does not grow with history.
    Run inside a transaction (a REPEATABLE READ one, for a consistent answer).

    `on_event` hears of each event's position, `on_step` of each event with
    the state it left (a user's come before the user is yielded).

    Raises a ReplayError naming the event the fold could not read or apply.
    """
    decode = ledger.decode_row
    state: UserState | None = None
    position = 0
    with conn.cursor(name="replay_all", binary=True) as curs:
        curs.itersize = 10_000
        curs.execute(events_table.ALL_BY_USER, (up_to,))
        for user_id, version, topic, data, notification_id in curs:
            if state is not None and state.id != user_id:
                yield state, position
                state = None
            if at is not None and events_table.recorded_after(data, at):
                continue  # and so are the rest of this user's: times never go back
            try:
                event = decode(user_id, version, topic, data)
                state = evolve(event, state)
            except HistoryUnreadable as e:
                raise ReplayError(notification_id, e) from e
            position = notification_id
            if on_event is not None:
                on_event(notification_id)
            if on_step is not None:
                on_step(event, state, notification_id)
        if state is not None:
            yield state, position


class ReplayError(HistoryUnreadable):
    """A replay of every user stopped at an event: where, and why."""

    def __init__(self, position: int, cause: HistoryUnreadable):
        super().__init__(f"at position {position}: {cause.detail}")
        self.position = position
