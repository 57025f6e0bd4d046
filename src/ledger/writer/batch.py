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
from typing import Any, cast

from ledger import idempotency
from ledger.commands import Command
from ledger.domain import Cause, User, UserEvent, UserState
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
    """A command's answer: its event, and its user's state right after it, as
    the API shows them."""

    event: dict[str, Any]
    user: dict[str, Any]
    replayed: bool = False  # the stored outcome of an earlier request with the same key

    def as_outcome(self) -> dict[str, Any]:
        return {"accepted": {"event": self.event, "user": self.user}}


#: How an accepted command is shown: (event, state after it, position) to the
#: event and user of its answer. Given by whoever builds the writer (the API's
#: shapes live at the edge), and stored with an idempotency key as it was shown.
Present = Callable[[UserEvent, UserState, int], tuple[dict[str, Any], dict[str, Any]]]

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

    def __post_init__(self) -> None:
        self.fingerprint = self.command.fingerprint() if self.key is not None else ""


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event a batch decided to record: whose command it answers, and the
    state it leaves its user in."""

    index: int
    event: UserEvent
    state: UserState


class Decisions:
    """Decides `batch` in arrival order against `users` (changed in place: each
    decided user is the one the next command meets)."""

    def __init__(
        self,
        batch: Sequence[Pending],
        users: dict[str, User | None],
        unreadable: dict[str, HistoryUnreadable],
        stored: dict[IdempotencyKey, StoredOutcome],
    ) -> None:
        self.batch = batch
        self.users = users
        self.unreadable = unreadable
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
        try:
            user = command.decide(self.users.get(command.user_id), pending.cause)
        except LedgerError as refusal:
            self.results[index] = refusal
            if key is not None and isinstance(refusal, DOMAIN_REFUSALS):
                outcome = {"refused": {"code": refusal.code, "detail": refusal.detail}}
                self.records.append((key, fingerprint, outcome))
            return
        except Exception as error:
            log.exception("deciding %r failed", command)
            self.results[index] = error
            return
        self.users[command.user_id] = user
        (event,) = cast(list[UserEvent], user.collect_events())
        self.new_events.append(NewEvent(index, event, user.state))

    def accept(self, positions: Sequence[int], present: Present) -> list[Result]:
        """Complete the results with the positions the new events were given."""
        for new, position in zip(self.new_events, positions, strict=True):
            event, user = present(new.event, new.state, position)
            accepted = Accepted(event, user)
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
        return Accepted(outcome["accepted"]["event"], outcome["accepted"]["user"], replayed=True)
    refused = outcome["refused"]
    return REFUSALS_BY_CODE[refused["code"]](refused["detail"], replayed=True)
