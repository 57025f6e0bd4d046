"""What a batch reads under the events table's lock besides the events: the
holds its settles and releases name that have left their user's state, and,
for a Stripe delivery, what was received before. Read under the lock, because
only commands that hold it write these rows: nothing can change them between
the read and the batch's commit."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import psycopg

from ledger import holds_table, stripe_table
from ledger.commands import NO_USER, ApplyStripeEvent, Paid, Received
from ledger.domain import Hold, User
from ledger.writer.batch import Pending


async def recorded_holds(
    conn: psycopg.AsyncConnection[Any],
    batch: Sequence[Pending],
    users: dict[str, User | None],
) -> dict[tuple[str, str], Hold]:
    """The holds the batch's commands name that are not in their user's
    state (closed before the user's last event, or unknown), as recorded."""
    wanted = []
    for pending in batch:
        user_id, hold_id = pending.command.user_id, pending.command.existing_hold
        user = users.get(user_id)
        if hold_id is not None and user is not None and user.state.hold(hold_id) is None:
            wanted.append((user_id, hold_id))
    if not wanted:
        return {}
    cursor = await conn.execute(
        holds_table.LOOKUP, ([u for u, _ in wanted], [h for _, h in wanted])
    )
    found = {}
    for row in await cursor.fetchall():
        user_id, hold, _ = holds_table.hold_of(row)
        found[user_id, hold.id] = hold
    return found


async def received(conn: psycopg.AsyncConnection[Any], batch: Sequence[Pending]) -> Received:
    """For a batch that is one Stripe delivery (such a batch is decided
    alone): the same event as recorded before; else, for a change of a
    payment, who paid with it (the delivery is given that user, before the
    batch reads its users), and for a purchase, what waits for its payment."""
    if len(batch) != 1 or not isinstance(batch[0].command, ApplyStripeEvent):
        return Received()
    pending = batch[0]
    command = pending.command
    assert isinstance(command, ApplyStripeEvent)
    cursor = await conn.execute(stripe_table.ONE, (command.delivery.event_id,))
    row = await cursor.fetchone()
    if row is not None:
        return Received(previous=stripe_table.view(row))
    payment = command.delivery.payment_intent
    if payment is None:
        return Received()
    if command.user_id == NO_USER:
        cursor = await conn.execute(stripe_table.OWNER, (payment,))
        owner = await cursor.fetchone()
        if owner is not None:
            pending.command = dataclasses.replace(command, user_id=str(owner[0]))
    if not isinstance(command.fact, Paid):
        return Received()
    cursor = await conn.execute(stripe_table.WAITING, (payment,))
    return Received(waiting=stripe_table.waiting_of(await cursor.fetchall()))
