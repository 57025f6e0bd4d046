"""Webhooks out: what subscribed endpoints cost the commands, and how soon a
command's message reaches its endpoint.

- Spends per second (wrk, 64 clients, 10,000 users) with no webhook endpoint,
  then with three subscribed to every event, each on a ledger of its own, in
  one run. The outbox and sender run beside the projector, off the command
  path: the goal is at least 0.9 of the rate without endpoints.
- Delivery lag at a steady 1,000 spends per second (and at 200): the time a
  spend's `credits.spent` message reached the receiver minus the time the
  spend was acknowledged (both this process's clock). Goal: p99 at most
  250 ms at 1,000 per second.

The receiver is a small asyncio HTTP server in this process, on 127.0.0.1,
answering 200 at once (so the ledger is told to allow http and private
addresses)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from bench import lag, wrk
from bench.databases import Server
from bench.processes import ADMIN_KEY, API_KEY, API_KEYS, Served, free_port, python_env, serving
from bench.stats import percentile
from bench.throughput import WORKLOADS, prepare_events, wait_projected
from ledger.db import Database

ENDPOINTS = 3


@dataclass
class Receiver:
    """Counts what arrives, and when each spend's message did (by position)."""

    port: int = field(default_factory=free_port)
    arrived: int = 0
    spent_at: dict[int, float] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _serve(self, ready: threading.Event) -> None:
        server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        ready.set()
        async with server:
            await server.serve_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                now = time.perf_counter()
                self.arrived += 1
                message = orjson.loads(body)
                if message["type"] == "credits.spent":
                    position = int(message["data"]["event"]["position"])
                    self.spent_at.setdefault(position, now)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.CancelledError, ConnectionError):
            pass
        finally:
            writer.close()

    def __enter__(self) -> Receiver:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            with contextlib.suppress(asyncio.CancelledError):
                self._loop.run_until_complete(self._serve(ready))

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None:
            for task in asyncio.all_tasks(self._loop):
                self._loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(5)


def _ledger(database: Database) -> Served:
    """`ledger serve` as bench.processes.ledger_server starts it, allowed to send here."""
    port = free_port()
    env = python_env(
        LEDGER_DATABASE_URL=database.url,
        LEDGER_API_KEYS=API_KEYS,
        LEDGER_LOG_LEVEL="warning",
        LEDGER_WEBHOOKS_ALLOW_HTTP="1",
        LEDGER_WEBHOOKS_ALLOW_PRIVATE="1",
    )
    argv = [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", "1"]
    return Served("ledger", argv, env, port)


def _subscribe(served: Served, receiver: Receiver, count: int, types: list[str]) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    for n in range(count):
        body = {"url": receiver.url(f"/hooks/{n}"), "event_types": types}
        answer = httpx.post(f"{served.url}/v1/webhook-endpoints", json=body, headers=headers)
        answer.raise_for_status()


def _spends(server: Server, endpoints: int, warmup: float, seconds: float) -> dict[str, Any]:
    workload = WORKLOADS[0]
    with server.scratch(f"webhooks_{endpoints}") as database, Receiver() as receiver:
        prepare_events(database, workload)
        with serving(_ledger(database)) as served:
            wait_projected(database)
            _subscribe(served, receiver, endpoints, ["*"])
            wrk.run(served.url, workload.load, API_KEY, warmup, seed=2)
            result = wrk.run(served.url, workload.load, API_KEY, seconds, seed=3).as_dict()
        return {**result, "endpoints": endpoints, "messages_received": receiver.arrived}


async def _paced(
    port: int, user_ids: list[str], warmup: float, seconds: float, rate: float
) -> list[lag.Sent]:
    queue: asyncio.Queue[tuple[lag.Sent, bytes] | None] = asyncio.Queue()
    workers = [asyncio.create_task(lag._connection(port, queue)) for _ in range(lag.CONNECTIONS)]
    rng = random.Random(4)
    sends: list[lag.Sent] = []
    start = time.perf_counter() + 0.05
    for i in range(int((warmup + seconds) * rate)):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent = lag.Sent(scheduled=due)
        sends.append(sent)
        path = f"/v1/users/{rng.choice(user_ids)}/credits/spends"
        queue.put_nowait((sent, lag._request(port, path)))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return [s for s in sends if s.scheduled >= start + warmup]


def _lag(server: Server, warmup: float, seconds: float, rate: float) -> dict[str, Any]:
    workload = WORKLOADS[0]
    with server.scratch("webhooks_lag") as database, Receiver() as receiver:
        prepare_events(database, workload)
        with serving(_ledger(database)) as served:
            wait_projected(database)
            _subscribe(served, receiver, 1, ["credits.spent"])
            measured = asyncio.run(_paced(served.port, workload.user_ids(), warmup, seconds, rate))
            ok = [s for s in measured if s.status == 201]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(
                s.position not in receiver.spent_at for s in ok
            ):
                time.sleep(0.1)
        lags = [
            (receiver.spent_at[s.position] - s.acknowledged) * 1000
            for s in ok
            if s.position in receiver.spent_at
        ]
        first = min(s.scheduled for s in measured)
        last = max(s.acknowledged for s in measured)
        return {
            "target_rate": rate,
            "commands": len(measured),
            "acknowledged": len(ok),
            "achieved_rate": round(len(ok) / (last - first), 1),
            "delivery_lag_p50_ms": round(percentile(lags, 50), 2),
            "delivery_lag_p99_ms": round(percentile(lags, 99), 2),
            "delivery_lag_max_ms": round(max(lags), 2) if lags else None,
            "never_delivered": len(ok) - len(lags),
        }


def measure(server: Server, *, warmup: float, seconds: float) -> dict[str, Any]:
    none = _spends(server, 0, warmup, seconds)
    three = _spends(server, ENDPOINTS, warmup, seconds)
    return {
        "spends_without_endpoints": none,
        "spends_with_three_endpoints": three,
        "ratio": round(three["spends_per_second"] / max(none["spends_per_second"], 1), 3),
        "lag_at_1000_per_second": _lag(server, min(warmup, 2.0), seconds, lag.RATE),
        # Beside it, a rate this sender keeps up with on a small machine.
        "lag_at_200_per_second": _lag(server, min(warmup, 2.0), seconds, 200.0),
    }
