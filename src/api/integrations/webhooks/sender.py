"""The sender: posts each due message to its endpoint, signed, and records
every attempt.

Several senders may run (one beside each projector process): each leases the
messages it sends (projections.webhooks.messages_table.LEASE), so no message
is sent by two at once, and one that dies leaves its leases to run out and
its messages to be sent again, with the same `webhook-id`: at least once.
A user's messages to an endpoint go one at a time, in position order. Each
endpoint has a few slots of its own (`per_endpoint`) out of the sender's
(`concurrency`), so that one slow or dead endpoint cannot hold up the others.

Time decides when a message is due and when it is tried again: the injected
`clock`, so that tests move time instead of sleeping. The signature's
timestamp is the wall clock's (a receiver checks it against its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from api.integrations.webhooks import schedule, signing
from api.integrations.webhooks.safety import Policy, UnsafeUrl
from api.integrations.webhooks.transport import Clients, DeliveryError
from ledger.clock import Clock, system_clock
from ledger.db import Database
from projections.webhooks import endpoints_table, messages_table

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Leased:
    id: str
    endpoint_id: str
    user_id: str
    body: str
    tries: int
    url: str
    keys: tuple[str, ...]
    lease_until: datetime  # on the wall clock


@dataclass(frozen=True, slots=True)
class _Attempt:
    message: _Leased
    at: datetime
    status: int | None
    error: str | None
    duration_ms: float

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


#: Messages leased ahead, per slot: the next starts as soon as one is done, and
#: a claim brings several.
_AHEAD = 4


class Sender:
    def __init__(
        self,
        database: Database,
        *,
        policy: Policy | None = None,
        clock: Clock = system_clock,
        wall_clock: Clock = system_clock,
        per_endpoint: int = 16,
        concurrency: int = 256,
        timeout: float = 10.0,
        lease_seconds: float | None = None,
        poll_interval: float = 0.5,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.database = database
        self.policy = policy or Policy()
        self.clock = clock
        self.wall_clock = wall_clock
        self.per_endpoint = per_endpoint
        self.concurrency = concurrency
        self.timeout = timeout
        # Longer than a message can wait in hand (the attempts leased ahead of
        # it in its slot) and then take: a lease runs out only for a sender
        # gone (whose messages then wait that long to be sent again).
        self.lease = timedelta(seconds=max(lease_seconds or 0.0, (_AHEAD + 1) * timeout + 5))
        self.poll_interval = poll_interval
        self.jitter = jitter
        self.owner = uuid.uuid4().hex
        self.attempts = 0
        #: Messages leased and not done yet, by endpoint: up to twice its slots,
        #: so that the next starts as soon as one is done (no query between).
        self._in_flight: Counter[str] = Counter()
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._sending: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._attempts: asyncio.Queue[_Attempt] | None = None

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ledger-webhook-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            loop.call_soon_threadsafe(wake.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        """Look for due messages now (after a test moved the clock, say)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            loop.call_soon_threadsafe(wake.set)

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
            runner.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._attempts = asyncio.Queue()
        self._sending = asyncio.Semaphore(self.concurrency)
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                await self._serve()
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                log.warning("the webhook sender lost its database connection: %s", e)
            except Exception:
                log.exception("the webhook sender stopped on an unexpected error; restarting")
            if self._stopping.is_set():
                break
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _serve(self) -> None:
        assert self._wake is not None
        conninfo = self.database.conninfo()
        clients = Clients(self.policy, self.per_endpoint)
        async with (
            await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn,
            await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as results,
            await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as listener,
        ):
            await listener.execute(f"LISTEN {messages_table.CHANNEL}")
            listening = asyncio.create_task(self._listen(listener))
            recording = asyncio.create_task(self._recorder(results))
            try:
                while not self._stopping.is_set():
                    for helper in (listening, recording):
                        if helper.done():
                            helper.result()  # raises what ended it
                    self._wake.clear()
                    for leased in await self._claim(conn):
                        task = asyncio.create_task(self._deliver(clients, leased))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.poll_interval)
                    if self._tasks:
                        await asyncio.sleep(0.002)  # a few more slots free, one claim
            finally:
                listening.cancel()
                if self._tasks:
                    await asyncio.wait(list(self._tasks), timeout=self.timeout + 1)
                recording.cancel()
                with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                    await recording
                await self._write(results, self._taken())  # what was sent, recorded
                await clients.close()

    async def _listen(self, listener: psycopg.AsyncConnection[Any]) -> None:
        assert self._wake is not None
        async for _ in listener.notifies():
            self._wake.set()

    # -- claiming -----------------------------------------------------------------

    async def _claim(self, conn: psycopg.AsyncConnection[Any]) -> list[_Leased]:
        held = _AHEAD * self.per_endpoint
        free = _AHEAD * self.concurrency - sum(self._in_flight.values())
        if free <= 0:
            return []
        now, wall = self.clock(), self.wall_clock()
        full = [e for e, n in self._in_flight.items() if n >= held]
        cursor = await conn.execute(
            messages_table.DUE, {"now": now, "wall": wall, "full": full, "limit": free * 4}
        )
        slots: dict[str, int] = {}
        chosen: list[str] = []
        for message_id, endpoint_id in await cursor.fetchall():
            left = slots.setdefault(endpoint_id, held - self._in_flight[endpoint_id])
            if left > 0 and len(chosen) < free:
                chosen.append(message_id)
                slots[endpoint_id] = left - 1
        if not chosen:
            return []
        until = wall + self.lease
        cursor = await conn.execute(
            messages_table.LEASE, {"owner": self.owner, "until": until, "ids": chosen, "wall": wall}
        )
        rows = await cursor.fetchall()
        if not rows:
            return []
        async with conn.cursor(row_factory=dict_row) as curs:
            await curs.execute(endpoints_table.SENDING, (list({r[1] for r in rows}),))
            endpoints = {e["id"]: e for e in await curs.fetchall()}
        leased = []
        for message_id, endpoint_id, user_id, body, tries, _ in rows:
            endpoint = endpoints.get(endpoint_id)
            if endpoint is None:
                continue  # deleted meanwhile, and its messages with it
            keys = [endpoint["secret"]]
            previous_until = endpoint["previous_secret_until"]
            if endpoint["previous_secret"] and previous_until is not None and previous_until > now:
                keys.append(endpoint["previous_secret"])
            url = endpoint["url"]
            leased.append(
                _Leased(message_id, endpoint_id, user_id, body, tries, url, tuple(keys), until)
            )
            self._in_flight[endpoint_id] += 1
        return leased

    # -- sending ------------------------------------------------------------------

    async def _deliver(self, clients: Clients, m: _Leased) -> None:
        """Waits for one of the endpoint's slots and one of the sender's, then
        sends, unless the lease could run out before the attempt ends (the
        message is then left to whoever leases it next)."""
        assert self._attempts is not None and self._sending is not None
        slots = self._slots.get(m.endpoint_id)
        if slots is None:
            slots = self._slots[m.endpoint_id] = asyncio.Semaphore(self.per_endpoint)
        try:
            async with slots, self._sending:
                left = (m.lease_until - self.wall_clock()).total_seconds()
                if left < self.timeout + 1:
                    return
                attempted_at = self.clock()
                started = time.perf_counter()
                status, error = await self._post(clients, m)
                duration_ms = (time.perf_counter() - started) * 1000
                self._attempts.put_nowait(_Attempt(m, attempted_at, status, error, duration_ms))
        finally:
            self._in_flight[m.endpoint_id] -= 1
            if self._in_flight[m.endpoint_id] <= 0:
                del self._in_flight[m.endpoint_id]
            if self._wake is not None:
                self._wake.set()

    async def _post(self, clients: Clients, m: _Leased) -> tuple[int | None, str | None]:
        """The endpoint's HTTP status, or why there is none."""
        try:
            endpoint = clients.of(m.endpoint_id, m.url)
        except UnsafeUrl as e:
            return None, f"refused: {e}"
        headers = signing.headers(m.id, m.body, m.keys, self.wall_clock())
        try:
            async with asyncio.timeout(self.timeout):
                return await endpoint.post(m.body.encode(), headers), None
        except TimeoutError:
            return None, f"no answer within {self.timeout:g} s"
        except DeliveryError as e:
            return None, str(e)[:500]

    # -- recording ----------------------------------------------------------------

    def _taken(self, first: _Attempt | None = None, most: int = 1000) -> list[_Attempt]:
        """The attempts waiting to be recorded (after `first`), up to `most`."""
        assert self._attempts is not None
        batch = [] if first is None else [first]
        while len(batch) < most and not self._attempts.empty():
            batch.append(self._attempts.get_nowait())
        return batch

    async def _recorder(self, results: psycopg.AsyncConnection[Any]) -> None:
        """Records the attempts as they finish, a batch per transaction. (The
        message stays leased meanwhile: no one sends it again.)"""
        assert self._attempts is not None and self._wake is not None
        while True:
            batch = self._taken(await self._attempts.get())
            await self._write(results, batch)
            self._wake.set()  # a user's next message may be due now

    async def _write(self, results: psycopg.AsyncConnection[Any], batch: list[_Attempt]) -> None:
        if not batch:
            return
        self.attempts += len(batch)
        now = self.clock()
        done = [a for a in batch if a.succeeded]
        failed = [a for a in batch if not a.succeeded]
        async with results.transaction():
            await results.execute(messages_table.HEADS_LOCK)
            await results.execute(
                messages_table.RECORD_ATTEMPTS,
                (
                    [a.message.id for a in batch],
                    [a.at for a in batch],
                    [a.status for a in batch],
                    [a.error for a in batch],
                    [a.duration_ms for a in batch],
                ),
            )
            if done:
                ids = [a.message.id for a in done]
                await results.execute(messages_table.SUCCEEDED, (now, ids, self.owner))
                endpoints = list({a.message.endpoint_id for a in done})
                await results.execute(endpoints_table.DELIVERING, (endpoints,))
            if failed:
                later = []
                for a in failed:
                    delay = schedule.next_delay(a.message.tries + 1, jitter=self.jitter)
                    later.append(None if delay is None else now + delay)
                ids = [a.message.id for a in failed]
                await results.execute(messages_table.RETRY_LATER, (ids, later, self.owner))
                for endpoint_id in sorted({a.message.endpoint_id for a in failed}):
                    gone = any(
                        a.status == 410 for a in failed if a.message.endpoint_id == endpoint_id
                    )
                    statement = endpoints_table.GONE if gone else endpoints_table.FAILING
                    limit = schedule.FAILING_LIMIT
                    await results.execute(
                        statement, {"id": endpoint_id, "now": now, "limit": limit}
                    )
            pairs = sorted({(a.message.endpoint_id, a.message.user_id) for a in batch})
            await results.execute(
                messages_table.MARK_HEADS, ([e for e, _ in pairs], [u for _, u in pairs])
            )


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's, where it is installed (as uvicorn runs the API), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
