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

from ledger import chain, holds_table, idempotency, snapshots, stripe_table
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
    #: The new events as the table stores them (topic and state bytes), in order.
    topics: Sequence[str] = ()
    states: Sequence[bytes] = ()
    #: Each command of the batch, and its result.
    decided: Sequence[tuple[Command, Result]] = ()

    def last_positions(self) -> dict[str, int]:
        """The position of each user's last new event."""
        return {
            new.event.originator_id: position
            for new, position in zip(self.new_events, self.positions, strict=True)
        }


class Part(Protocol):
    #: A query (without parameters) run as the batch takes the lock, in the
    #: same round trip; its rows are handed to `write` (None: nothing to read).
    at_lock: str | None

    async def write(
        self, conn: psycopg.AsyncConnection[Any], written: Written, found: Sequence[Any]
    ) -> str | None:
        """Add this part's rows for `written`, in the batch's transaction;
        `found` are the rows its `at_lock` query read. A statement returned
        (its values written into it: no parameters) is sent with the COMMIT,
        in the same round trip."""


class IdempotencyOutcomes:
    """The first outcome of each key (see ledger.idempotency)."""

    at_lock: str | None = None

    async def write(
        self, conn: psycopg.AsyncConnection[Any], written: Written, found: Sequence[Any]
    ) -> None:
        if written.outcomes:
            await conn.execute(idempotency.STORE, idempotency.store_params(written.outcomes))


class Snapshots:
    """A snapshot of each user whose stream passed a multiple of
    snapshots.EVERY events (see ledger.snapshots)."""

    at_lock: str | None = None

    async def write(
        self, conn: psycopg.AsyncConnection[Any], written: Written, found: Sequence[Any]
    ) -> None:
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
    """Each hold an event placed or closed, as it left it (ledger.holds_table),
    sent with the COMMIT."""

    at_lock: str | None = None

    async def write(
        self, conn: psycopg.AsyncConnection[Any], written: Written, found: Sequence[Any]
    ) -> str | None:
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
        return holds_table.store_statement(rows.values()) if rows else None


class StripeEvents:
    """Each Stripe delivery the batch decided, with its outcome; what was
    waiting for the purchases it completed, applied or ignored now; and who
    paid with each of their payments (ledger.stripe_table). A delivery whose
    outcome is not known (the database failed, its user's history cannot be
    read) is not recorded: Stripe sends it again."""

    at_lock: str | None = None

    async def write(
        self, conn: psycopg.AsyncConnection[Any], written: Written, found: Sequence[Any]
    ) -> None:
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


class ChainLinks:
    """Each new event's link in the hash chain (ledger.chain), after those of
    any events recorded since the chain's head by another path (a short
    stretch; a long one, a history from before the chain, is left to the
    sealer, and these events with it, so that the chain is always in order)."""

    #: The longest stretch of unchained events a batch chains before its own.
    LONGEST_GAP = 1000

    #: The chain's head, read as the lock is taken.
    at_lock: str | None = chain.HEAD

    async def write(
        self, conn: psycopg.AsyncConnection[Any], written: Written, found: Sequence[Any]
    ) -> str | None:
        """The links' rows, sent with the COMMIT (one round trip less under the lock)."""
        if not written.positions:
            return None
        chained_to, head_hash = found[0] if found else (0, None)
        first = written.positions[0]
        gap: list[chain.Stored] = []
        # Under the lock no one else inserts, so this batch's events follow every
        # event recorded: only if its first position does not follow the chain's
        # head can events be unchained before it (recorded by another path), or
        # positions skipped (a rolled-back insert). Rarely: chain those first.
        if first != chained_to + 1:
            cursor = await conn.execute(chain.HEAD_AND_GAP, (first, self.LONGEST_GAP + 1))
            rows = await cursor.fetchall()
            gap = chain.stored([row[2:] for row in rows if row[2] is not None])
            if len(gap) > self.LONGEST_GAP:
                return None
        previous = bytes(head_hash) if head_hash is not None else chain.GENESIS
        mine = zip(
            written.positions,
            [new.event.originator_id for new in written.new_events],
            [new.event.originator_version for new in written.new_events],
            written.topics,
            written.states,
            strict=True,
        )
        positions, hashes = chain.chained(previous, [*gap, *(chain.Stored(*e) for e in mine)])
        return chain.store_statement(positions, hashes)


DEFAULT_PARTS: tuple[Part, ...] = (
    IdempotencyOutcomes(),
    Snapshots(),
    HoldRecords(),
    StripeEvents(),
    ChainLinks(),
)
