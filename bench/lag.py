"""Projector lag while commands arrive at a steady 1,000 per second.

A paced client sends spends through HTTP to `ledger serve` on keep-alive
connections, one every millisecond on schedule, and notes when each was
acknowledged and at what position. A listener on the projector's channel
(`ledger_projection_position`, payload the position of each commit) notes when
each position was applied. The lag of a command is the time its position was
applied minus the time it was acknowledged; both clocks are this process's.
A command the projector applied before its response reached the client has a
lag at or below zero.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg

from bench.databases import Server
from bench.processes import API_KEY, ledger_server, serving
from bench.stats import percentile
from bench.throughput import WORKLOADS, prepare_events, wait_projected
from ledger.db import Database
from projections.status import POSITION_CHANNEL

RATE = 1000.0
CONNECTIONS = 64


@dataclass
class Sent:
    scheduled: float
    sent: float = 0.0
    acknowledged: float = 0.0
    status: int = 0
    position: int = 0


@dataclass
class Applied:
    times: list[float] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, when: float, position: int) -> None:
        if self.positions and position <= self.positions[-1]:
            return  # a swap or a repeat: nothing new applied
        self.times.append(when)
        self.positions.append(position)
        self.changed.set()

    @property
    def last(self) -> int:
        return self.positions[-1] if self.positions else 0

    async def reach(self, position: int, within: float) -> None:
        """Until `position` is applied, or `within` seconds have passed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while self.last < position:
                    self.changed.clear()
                    await self.changed.wait()

    def when(self, position: int) -> float | None:
        index = bisect.bisect_left(self.positions, position)
        return self.times[index] if index < len(self.times) else None


async def _listen(database: Database, applied: Applied, ready: asyncio.Event) -> None:
    async with await psycopg.AsyncConnection.connect(database.conninfo(), autocommit=True) as conn:
        await conn.execute(f"LISTEN {POSITION_CHANNEL}")
        ready.set()
        async for notify in conn.notifies():
            applied.add(time.perf_counter(), int(notify.payload))


def _request(port: int, path: str) -> bytes:
    body = b'{"amount":1,"reason":"bench"}'
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _connection(port: int, queue: asyncio.Queue[tuple[Sent, bytes] | None]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (item := await queue.get()) is not None:
            sent, request = item
            sent.sent = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            sent.acknowledged = time.perf_counter()
            sent.status = int(head.split(b" ", 2)[1])
            if sent.status == 201:
                sent.position = int(orjson.loads(body)["event"]["position"])
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _paced(
    database: Database, port: int, user_ids: list[str], warmup: float, seconds: float
) -> dict[str, Any]:
    applied = Applied()
    ready = asyncio.Event()
    listener = asyncio.create_task(_listen(database, applied, ready))
    await asyncio.wait_for(ready.wait(), 10)
    queue: asyncio.Queue[tuple[Sent, bytes] | None] = asyncio.Queue()
    workers = [asyncio.create_task(_connection(port, queue)) for _ in range(CONNECTIONS)]
    rng = random.Random(4)
    total = int((warmup + seconds) * RATE)
    sends: list[Sent] = []
    start = time.perf_counter() + 0.05
    try:
        for i in range(total):
            due = start + i / RATE
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = Sent(scheduled=due)
            sends.append(sent)
            path = f"/v1/users/{rng.choice(user_ids)}/credits/spends"
            queue.put_nowait((sent, _request(port, path)))
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
        await applied.reach(max((s.position for s in sends), default=0), within=10)
    finally:
        for worker in workers:
            worker.cancel()
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
            await listener
    measured = [s for s in sends if s.scheduled >= start + warmup]
    return _report(measured, applied, seconds)


def _report(measured: list[Sent], applied: Applied, seconds: float) -> dict[str, Any]:
    ok = [s for s in measured if s.status == 201]
    lags: list[float] = []
    unapplied = 0
    for s in ok:
        when = applied.when(s.position)
        if when is None:
            unapplied += 1
        else:
            lags.append((when - s.acknowledged) * 1000)
    first = min(s.scheduled for s in measured)
    last_ack = max(s.acknowledged for s in measured)
    late = [(s.sent - s.scheduled) * 1000 for s in measured]
    latency = [(s.acknowledged - s.sent) * 1000 for s in ok]
    return {
        "target_rate": RATE,
        "commands": len(measured),
        "acknowledged": len(ok),
        "errors": len(measured) - len(ok),
        "achieved_rate": round(len(ok) / (last_ack - first), 1),
        "seconds": seconds,
        "send_delay_p99_ms": round(percentile(late, 99), 2),
        "send_delay_max_ms": round(max(late), 2),
        "command_latency_p50_ms": round(percentile(latency, 50), 2),
        "command_latency_p99_ms": round(percentile(latency, 99), 2),
        "lag_p50_ms": round(percentile(lags, 50), 2),
        "lag_p99_ms": round(percentile(lags, 99), 2),
        "lag_max_ms": round(max(lags), 2) if lags else None,
        "lag_at_or_below_zero": sum(1 for lag in lags if lag <= 0),
        "never_applied": unapplied,
        "projector_commits": len(applied.positions),
    }


def measure(server: Server, *, warmup: float, seconds: float) -> dict[str, Any]:
    workload = WORKLOADS[0]
    with server.scratch("lag") as database:
        prepare_events(database, workload)
        with serving(ledger_server(database)) as served:
            wait_projected(database)
            return asyncio.run(_paced(database, served.port, workload.user_ids(), warmup, seconds))
