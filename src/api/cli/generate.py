"""`ledger generate`: a realistic history, for benchmarks and demos.

Users register (some as before the credit system, in the old event shape),
then mostly spend chat messages and credits, are granted more when they run
low, and now and then change plan. Every new event goes through the same
commands and the same writer as the API's, many commands per transaction; the
old-shape registrations go through the library's own insert.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import orjson
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from ledger.application import Ledger
from ledger.commands import (
    ChangePlan,
    Command,
    GrantChatMessages,
    GrantCredits,
    RegisterUser,
    SpendChatMessages,
    SpendCredits,
)
from ledger.db import Database
from ledger.domain import DEFAULT_FREE_CHAT_MESSAGES, DEFAULT_FREE_CREDITS, Cause, User
from ledger.writer import Accepted, CommandWriter, Result
from projections.views import present

CHUNK = 5000
# The library sends its insert in psycopg's pipeline mode, which can stall on a
# large batch over a Unix socket (psycopg/psycopg#685): old-shape events go in
# smaller ones.
OLD_SHAPE_CHUNK = 1000


@dataclass
class _Balances:
    credits: int = DEFAULT_FREE_CREDITS
    chat: int = DEFAULT_FREE_CHAT_MESSAGES


def old_registration(user_id: str, level: str, renewal_period: str | None) -> StoredEvent:
    """A UserRegistered event as recorded before the credit system (version 1):
    a level and a renewal period, no balances, no cause."""
    state = {
        "timestamp": "2025-06-01T00:00:00+00:00",
        "originator_topic": get_topic(User),
        "level": level,
        "renewal_period": renewal_period,
    }
    return StoredEvent(user_id, 1, get_topic(User.UserRegistered), orjson.dumps(state))


def commands(users: int, events: int, rng: random.Random, prefix: str) -> Iterator[Command]:
    """`events` commands over `users` users (registrations included), each one
    valid when it is made."""
    balances: dict[str, _Balances] = {}
    ids = [f"{prefix}{i:07d}" for i in range(users)]
    for user_id in ids:
        balances[user_id] = _Balances()
        yield RegisterUser(user_id)
    for _ in range(max(events - users, 0)):
        user_id = ids[int(users * rng.random() ** 2)]  # the top 1% make 10% of the events
        b = balances[user_id]
        roll = rng.random()
        if roll < 0.60:
            if b.chat == 0:
                yield GrantChatMessages(user_id, 50, "monthly allowance")
                b.chat += 50
            else:
                yield SpendChatMessages(user_id, 1, "chat message")
                b.chat -= 1
        elif roll < 0.90:
            amount = rng.choice((1, 1, 1, 2, 5))
            if b.credits < amount:
                yield GrantCredits(user_id, 100, "top-up")
                b.credits += 100
            else:
                yield SpendCredits(user_id, amount, "image generation")
                b.credits -= amount
        elif roll < 0.98:
            amount = rng.choice((10, 50, 100))
            yield GrantCredits(user_id, amount, "promotion")
            b.credits += amount
        else:
            paid = rng.random() < 0.5
            yield ChangePlan(user_id, "paid" if paid else "free", "lifetime" if paid else None)


def generate(
    ledger: Ledger,
    database: Database,
    *,
    users: int,
    events: int,
    legacy_fraction: float = 0.1,
    seed: int = 1,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Record the history; returns the number of events recorded."""
    return asyncio.run(
        _generate(ledger, database, users, events, legacy_fraction, seed, on_progress)
    )


async def _generate(
    ledger: Ledger,
    database: Database,
    users: int,
    events: int,
    legacy_fraction: float,
    seed: int,
    on_progress: Callable[[int], None] | None,
) -> int:
    rng = random.Random(seed)  # noqa: S311  (repeatable, not secret)
    prefix = f"u{uuid.UUID(int=rng.getrandbits(128)).hex[:6]}_"
    cause = Cause(actor_role="generator", request_id=f"generate_{seed}")
    legacy = int(users * legacy_fraction)
    recorded = 0
    if legacy:
        old = [
            old_registration(f"{prefix}{i:07d}", rng.choice(("basic", "pro")), "monthly")
            for i in range(legacy)
        ]
        for start in range(0, len(old), OLD_SHAPE_CHUNK):
            ledger.recorder.insert_events(old[start : start + OLD_SHAPE_CHUNK])
        recorded += legacy
    chunk: list[tuple[Command, Cause]] = []
    async with CommandWriter(
        ledger, database, present, cache_size=max(users, 1), deadline=None
    ) as writer:
        for index, command in enumerate(commands(users, events, rng, prefix)):
            if index < legacy and isinstance(command, RegisterUser):
                continue  # registered above, in the old shape
            chunk.append((command, cause))
            if len(chunk) == CHUNK:
                recorded += _count(await writer.execute_together(chunk))
                chunk.clear()
                if on_progress is not None:
                    on_progress(recorded)
        if chunk:
            recorded += _count(await writer.execute_together(chunk))
    if on_progress is not None:
        on_progress(recorded)
    return recorded


def _count(results: list[Result]) -> int:
    return sum(1 for r in results if isinstance(r, Accepted))
