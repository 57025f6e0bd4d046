"""One batch's decisions: pure, with no I/O, so that they can be tested alone.

Given the batch's commands in arrival order, its users as the table lock found
them, and the stored outcomes of its idempotency keys, each command is decided
against the state left by the ones before it. Whatever goes wrong with one
command (a refusal, a user whose history this release cannot read, a bug) is
that command's result alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger import idempotency
from ledger.commands import Command, Context, Received
from ledger.domain import Cause, Hold, User, UserEvent, UserState
from ledger.errors import (
    DOMAIN_REFUSALS,
    REFUSALS_BY_CODE,
    HistoryUnreadable,
    IdempotencyKeyReused,
    LedgerError,
)
from ledger.idempotency import IdempotencyKey, StoredOutcome

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A command's answer, as the API shows it: `{"event", "user", ...}`, its
    event and its user's state right after it (and what else it concerns, a
    hold, say)."""

    body: dict[str, Any]
    replayed: bool = False  # the stored outcome of an earlier request with the same key

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = self.body["event"]
        return event

    @property
    def user(self) -> dict[str, Any]:
        user: dict[str, Any] = self.body["user"]
        return user

    def as_outcome(self) -> dict[str, Any]:
        return {"accepted": self.body}


#: How an accepted command is shown: (its event, the state after it, the
#: event's position) to its answer. Given by whoever builds the writer (the
#: API's shapes live at the edge), and stored with an idempotency key as shown.
Present = Callable[[UserEvent, UserState, int], dict[str, Any]]

#: A command's outcome: its event, or why not (a LedgerError, or an unexpected
#: error, which only that command's caller hears of).
Result = Accepted | Exception


@dataclass(slots=True)
class Pending:
    """A command waiting for its batch."""

    command: Command
    cause: Cause
    key: IdempotencyKey | None
    future: asyncio.Future[Accepted] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    #: How a reused key is recognised; worked out here, before the table lock.
    fingerprint: str = field(init=False)
    #: Done once its user, not in the writer's memory, has been read ahead of
    #: the batch (ledger.writer.warming); None if there was nothing to read.
    read_ahead: asyncio.Future[None] | None = None

    def __post_init__(self) -> None:
        self.fingerprint = self.command.fingerprint() if self.key is not None else ""


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event a batch decided to record, the state it leaves its user in,
    and which command of the batch it answers (None for what time brought
    first, recorded before the command's own event)."""

    index: int | None
    event: UserEvent
    state: UserState


class Decisions:
    """Decides `batch` in arrival order at `now` against `users` (changed in
    place: each decided user is the one the next command meets). `recorded`
    holds, by (user, hold), those of the holds the batch's commands name that
    have left their user's state, as last recorded; `received`, what was
    received before of a Stripe delivery (one of a batch of its own)."""

    def __init__(
        self,
        batch: Sequence[Pending],
        users: dict[str, User | None],
        unreadable: dict[str, HistoryUnreadable],
        stored: dict[IdempotencyKey, StoredOutcome],
        now: datetime,
        recorded: dict[tuple[str, str], Hold] | None = None,
        received: Received | None = None,
    ) -> None:
        self.batch = batch
        self.received = received or Received()
        self.users = users
        self.unreadable = unreadable
        self.now = now
        self.recorded = dict(recorded or {})
        self.results: list[Result | None] = [None] * len(batch)
        self.new_events: list[NewEvent] = []
        #: (key, fingerprint, outcome) of the keys this batch decides.
        self.records: list[tuple[IdempotencyKey, str, dict[str, Any]]] = []
        for index, pending in enumerate(batch):
            self._decide(index, pending, stored)

    def _decide(
        self, index: int, pending: Pending, stored: dict[IdempotencyKey, StoredOutcome]
    ) -> None:
        command, key, fingerprint = pending.command, pending.key, pending.fingerprint
        # (A batch never holds a key twice: see CommandWriter.submit.)
        if key is not None and key in stored:
            self.results[index] = replay(stored[key], fingerprint)
            return
        if command.user_id in self.unreadable:
            self.results[index] = HistoryUnreadable(self.unreadable[command.user_id].detail)
            return
        before = self.users.get(command.user_id)
        saved = before.state if before is not None else None
        context = Context(pending.cause, self.now, self._recorded_hold, self.received)
        try:
            user = command.decide(before, context)
        except Exception as error:
            if before is not None and saved is not None:
                # Nothing of a refused command is recorded, not even what time
                # brought before it: its user is as it was.
                before.collect_events()
                self.users[command.user_id] = User.from_state(saved)
            self.results[index] = error
            if not isinstance(error, LedgerError):
                log.exception("deciding %r failed", command)
            elif key is not None and isinstance(error, DOMAIN_REFUSALS):
                refused: dict[str, Any] = {"code": error.code, "detail": error.detail}
                if error.facts is not None:
                    refused["facts"] = error.facts
                self.records.append((key, fingerprint, {"refused": refused}))
            return
        self.users[command.user_id] = user
        *brought, own = user.collect_recorded()
        for event, state in brought:
            self.new_events.append(NewEvent(None, event, state))
        self.new_events.append(NewEvent(index, *own))
        for hold in user.state.holds:
            if not hold.is_open:
                self.recorded[command.user_id, hold.id] = hold

    def _recorded_hold(self, user_id: str, hold_id: str) -> Hold | None:
        return self.recorded.get((user_id, hold_id))

    def accept(self, positions: Sequence[int], present: Present) -> list[Result]:
        """Complete the results with the positions the new events were given."""
        for new, position in zip(self.new_events, positions, strict=True):
            if new.index is None:
                continue
            accepted = Accepted(present(new.event, new.state, position))
            self.results[new.index] = accepted
            pending = self.batch[new.index]
            if pending.key is not None:
                self.records.append((pending.key, pending.fingerprint, accepted.as_outcome()))
        return [r for r in self.results if r is not None]


def replay(stored: StoredOutcome, fingerprint: str) -> Result:
    """The first outcome given under a key, again; or why it cannot be."""
    try:
        outcome = idempotency.first_outcome(stored, fingerprint)
    except IdempotencyKeyReused as e:
        return e
    if "accepted" in outcome:
        return Accepted(outcome["accepted"], replayed=True)
    refused = outcome["refused"]
    return REFUSALS_BY_CODE[refused["code"]](
        refused["detail"], replayed=True, facts=refused.get("facts")
    )
