"""What is written in the same transaction as a batch's events, after them.

Each part gets what the batch wrote (its events, their positions, its users
before and after, its idempotency outcomes) and adds rows of its own, so that
they commit or roll back with the events: never one without the other. This is
the one hook for persistence beside the events (in the spirit of the
eventsourcing library's `_insert_events(**kwargs)`); a new kind of row is one
more part in `DEFAULT_PARTS`, not a branch in the writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg

from ledger import holds_table, idempotency, snapshots, stripe_table
from ledger.commands import ApplyStripeEvent, Command, Delivery
from ledger.domain import Hold, User
from ledger.domain.purchase_events import PurchaseCompleted
from ledger.domain.purchases import CHANGES, Change
from ledger.errors import NotApplied, Waiting
from ledger.idempotency import IdempotencyKey
from ledger.writer.batch import Accepted, NewEvent, Result


@dataclass(frozen=True, slots=True)
class Written:
    """A batch, as written so far in its transaction."""

    new_events: Sequence[NewEvent]
    positions: Sequence[int]
    #: Each of the batch's users' version before it (0 for none).
    versions_before: dict[str, int]
    #: Each of the batch's users after it (None: none, or unreadable).
    users: dict[str, User | None]
    #: (key, fingerprint, outcome) of the idempotency keys it decided.
    outcomes: Sequence[tuple[IdempotencyKey, str, dict[str, Any]]]
    #: Each command of the batch, and its result.
    decided: Sequence[tuple[Command, Result]] = ()

    def last_positions(self) -> dict[str, int]:
        """The position of each user's last new event."""
        return {
            new.event.originator_id: position
            for new, position in zip(self.new_events, self.positions, strict=True)
        }


class Part(Protocol):
    async def write(self, conn: psycopg.AsyncConnection[Any], written: Written) -> None:
        """Add this part's rows for `written`, in the batch's transaction."""


class IdempotencyOutcomes:
    """The first outcome of each key (see ledger.idempotency)."""

    async def write(self, conn: psycopg.AsyncConnection[Any], written: Written) -> None:
        if written.outcomes:
            await conn.execute(idempotency.STORE, idempotency.store_params(written.outcomes))


class Snapshots:
    """A snapshot of each user whose stream passed a multiple of
    snapshots.EVERY events (see ledger.snapshots)."""

    async def write(self, conn: psycopg.AsyncConnection[Any], written: Written) -> None:
        last = written.last_positions()
        due = [
            snapshots.Snapshot(user.state, last[user_id])
            for user_id, user in written.users.items()
            if user is not None
            and user_id in last
            and snapshots.crossed(written.versions_before[user_id], user.version)
        ]
        if due:
            await conn.execute(snapshots.STORE, snapshots.store_params(due))


class HoldRecords:
    """Each hold an event placed or closed, as it left it (ledger.holds_table)."""

    async def write(self, conn: psycopg.AsyncConnection[Any], written: Written) -> None:
        rows: dict[tuple[str, str], tuple[str, Hold, int]] = {}
        for new, position in zip(written.new_events, written.positions, strict=True):
            hold_id = getattr(new.event, "hold_id", None)
            if hold_id is None:
                continue
            hold = new.state.hold(hold_id)
            assert hold is not None  # the event that closes a hold leaves it in the state
            key = (new.event.originator_id, hold_id)
            placed = rows[key][2] if key in rows else position
            rows[key] = (new.event.originator_id, hold, placed)
        if rows:
            await conn.execute(holds_table.STORE, holds_table.store_params(rows.values()))


class StripeEvents:
    """Each Stripe delivery the batch decided, with its outcome; what was
    waiting for the purchases it completed, applied or ignored now; and who
    paid with each of their payments (ledger.stripe_table). A delivery whose
    outcome is not known (the database failed, its user's history cannot be
    read) is not recorded: Stripe sends it again."""

    async def write(self, conn: psycopg.AsyncConnection[Any], written: Written) -> None:
        rows: list[tuple[Delivery, str | None, str, str | None, Change | None]] = []
        for command, result in written.decided:
            if not isinstance(command, ApplyStripeEvent):
                continue
            user_id = command.user_id or None
            if isinstance(result, Accepted):
                rows.append((command.delivery, user_id, "applied", None, None))
            elif isinstance(result, NotApplied):
                fact = command.fact
                kept = fact if isinstance(result, Waiting) and isinstance(fact, CHANGES) else None
                rows.append((command.delivery, user_id, result.outcome, result.detail, kept))
        if not rows:
            return
        completed = [
            new.event
            for new in written.new_events
            if isinstance(new.event, PurchaseCompleted) and new.event.payment_intent is not None
        ]
        if completed:
            applied = sorted(
                {
                    str(cause["stripe_event_id"])
                    for new in written.new_events
                    if (cause := new.event.cause) and cause.get("stripe_event_id")
                }
            )
            payments = [e.payment_intent for e in completed]
            users = [e.originator_id for e in completed]
            purchases = [e.purchase_id for e in completed]
            await conn.execute(stripe_table.STORE_PAYMENTS, (payments, users, purchases))
            await conn.execute(stripe_table.SETTLE_WAITING, (applied, applied, payments, users))
        await conn.execute(stripe_table.STORE, stripe_table.store_params(rows))


DEFAULT_PARTS: tuple[Part, ...] = (
    IdempotencyOutcomes(),
    Snapshots(),
    HoldRecords(),
    StripeEvents(),
)
