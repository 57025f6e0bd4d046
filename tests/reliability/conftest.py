"""The reliability suite: the real `ledger serve` on real PostgreSQL, through
crashes, database outages, concurrency and hostile input.

Every scenario reports a one-line summary of what it did and what it saw:
printed (`pytest -s`, or the captured output with `-rA`), kept as a property of
its test case in JUnit XML, and listed again in a "reliability" section at the
end of the run.

This module holds the fixtures and the pieces the scenarios share: the clients
that send commands over HTTP (from a thread, or from child processes), the
record of what each command was answered, and the checks of that record
against the event store and the projection. Child processes import it as
`tests.reliability.conftest`; so do the scenarios.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import psutil
import pytest

from ledger.application import Ledger
from ledger.db import Database
from projections import status as st
from projections.audit import LedgerAudit, audit_all
from projections.views import event_id
from tests.helpers import API_KEYS, ServedLedger, head, ledger_process, rows, wait_caught_up
from tests.postgres import PrivatePostgres, server_home

#: Every request of this suite gives up after this long: a hang is a failure, not a wait.
REQUEST_TIMEOUT = 15.0


#: Every summary of the run, listed again at its end.
SUMMARIES: list[str] = []

#: report(scenario, **counts): a scenario's one-line summary.
Report = Callable[..., None]


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Report:
    """Print a scenario's one-line summary (seen with `pytest -s`), attach it to
    the test's report (a property in JUnit XML), and list it again in a
    "reliability" section at the end of the run."""

    def summarize(scenario: str, **counts: object) -> None:
        parts = ", ".join(f"{name.replace('_', ' ')}={value}" for name, value in counts.items())
        line = f"[reliability] {scenario}: {parts}"
        print(f"\n{line}", flush=True)
        request.node.user_properties.append(("reliability", line))
        SUMMARIES.append(line)

    return summarize


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SUMMARIES:
        terminalreporter.section("reliability")
        for line in SUMMARIES:
            terminalreporter.write_line(line)


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEYS[role]}"}


# -- commands, as a client sends them ------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """One command, with the Idempotency-Key its client sends it under (again
    and again, until it gets an answer)."""

    key: str
    kind: str  # register, grant_credits, spend_credits, grant_chat, spend_chat, plan, hold
    user_id: str
    amount: int = 0
    level: str = "paid"
    ttl_seconds: int = 900

    def request(self) -> tuple[str, str, str, dict[str, Any]]:
        """method, path, role, body."""
        user = f"/v1/users/{self.user_id}"
        amount = {"amount": self.amount, "reason": f"reliability {self.kind}"}
        match self.kind:
            case "register":
                return "POST", "/v1/users", "service", {"id": self.user_id}
            case "grant_credits":
                return "POST", f"{user}/credits/grants", "admin", amount
            case "spend_credits":
                return "POST", f"{user}/credits/spends", "service", amount
            case "grant_chat":
                return "POST", f"{user}/chat-messages/grants", "admin", amount
            case "spend_chat":
                return "POST", f"{user}/chat-messages/spends", "service", amount
            case "hold":
                hold = {"amount": self.amount, "ttl_seconds": self.ttl_seconds}
                return "POST", f"{user}/credits/holds", "service", hold
            case "plan":
                body: dict[str, Any] = {"level": self.level}
                if self.level == "paid":
                    body["renewal_period"] = "lifetime"
                return "PUT", f"{user}/plan", "admin", body
        raise ValueError(self.kind)


def registrations(user_ids: Sequence[str], prefix: str = "reg") -> list[Call]:
    return [Call(f"{prefix}-{user_id}", "register", user_id) for user_id in user_ids]


def mixed_call(rng: random.Random, key: str, user_ids: Sequence[str]) -> Call:
    """What a busy free tier sends: mostly spends, some grants, a few plan changes."""
    user_id = rng.choice(user_ids)
    roll = rng.random()
    if roll < 0.40:
        return Call(key, "spend_credits", user_id, rng.randint(1, 4))
    if roll < 0.65:
        return Call(key, "spend_chat", user_id, rng.randint(1, 3))
    if roll < 0.80:
        return Call(key, "grant_credits", user_id, rng.randint(1, 20))
    if roll < 0.92:
        return Call(key, "grant_chat", user_id, rng.randint(1, 10))
    return Call(key, "plan", user_id, level=rng.choice(["paid", "free"]))


@dataclass(slots=True)
class Outcome:
    """What one attempt of a call was answered, and when."""

    call: Call
    url: str
    started: float  # time.monotonic(), comparable across processes of one machine
    finished: float
    status: int | None = None  # None: no answer (connection refused or cut, timeout)
    error: str | None = None
    body: dict[str, Any] | None = None
    retry_after: str | None = None
    content_type: str = ""
    replayed: bool = False

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def unknown(self) -> bool:
        """No answer, or 503: the command may or may not have been recorded."""
        return self.status is None or self.status == 503

    @property
    def seconds(self) -> float:
        return self.finished - self.started

    @property
    def event(self) -> dict[str, Any]:
        assert self.body is not None
        return dict(self.body["event"])

    @property
    def user(self) -> dict[str, Any]:
        assert self.body is not None
        return dict(self.body["user"])

    @property
    def problem(self) -> str | None:
        return None if self.body is None else self.body.get("type")


class NoAnswer(Exception):
    """The connection was refused or cut, or the answer did not come in time."""


class Connection:
    """One keep-alive HTTP/1.1 connection to one server, used by one client at a
    time: a request, then its whole answer. Small and fast, so that on a
    machine with two cores the clients leave the server most of the time."""

    def __init__(self, url: str) -> None:
        self.url = url
        host, _, port = url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port or 80)
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                return await self._exchange(method, path, headers, body)
        except (OSError, EOFError, TimeoutError, ValueError, asyncio.IncompleteReadError) as e:
            self.close()
            raise NoAnswer(type(e).__name__) from e

    async def _exchange(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head_ = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head_.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        answer: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                answer[name.strip().lower()] = value.strip()
        content = await reader.readexactly(int(answer.get("content-length", "0")))
        if answer.get("connection", "").lower() == "close":
            self.close()
        return status, answer, content

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


class Connections:
    """A client's connections, one per server."""

    def __init__(self) -> None:
        self._by_url: dict[str, Connection] = {}

    def to(self, url: str) -> Connection:
        if url not in self._by_url:
            self._by_url[url] = Connection(url)
        return self._by_url[url]

    def close(self) -> None:
        for connection in self._by_url.values():
            connection.close()


async def send(connections: Connections, url: str, call: Call) -> Outcome:
    method, path, role, body = call.request()
    headers = {**auth(role), "Idempotency-Key": call.key, "Content-Type": "application/json"}
    started = time.monotonic()
    try:
        status, answer, content = await connections.to(url).request(
            method, path, headers, orjson.dumps(body)
        )
    except NoAnswer as e:
        return Outcome(call, url, started, time.monotonic(), error=str(e))
    outcome = Outcome(
        call,
        url,
        started,
        time.monotonic(),
        status=status,
        retry_after=answer.get("retry-after"),
        content_type=answer.get("content-type", ""),
        replayed=answer.get("idempotent-replayed") == "true",
    )
    with contextlib.suppress(orjson.JSONDecodeError):
        outcome.body = orjson.loads(content)
    return outcome


async def send_all(urls: Sequence[str], calls: Sequence[Call], clients: int) -> list[Outcome]:
    """Send every call once, `clients` at a time, the servers taken in turn."""
    queue = list(reversed(calls))
    outcomes: list[Outcome] = []

    async def client(number: int) -> None:
        connections = Connections()
        try:
            while queue:
                call = queue.pop()
                url = urls[(number + len(queue)) % len(urls)]
                outcomes.append(await send(connections, url, call))
        finally:
            connections.close()

    await asyncio.gather(*(client(n) for n in range(clients)))
    return outcomes


def send_calls(urls: Sequence[str], calls: Sequence[Call], clients: int = 16) -> list[Outcome]:
    return asyncio.run(send_all(urls, calls, clients))


def settle(
    urls: Sequence[str], calls: Sequence[Call], clients: int = 16, within: float = 60.0
) -> list[Outcome]:
    """What a careful client does after trouble: send each call whose outcome it
    does not know again, with the same Idempotency-Key, until it gets an answer."""
    deadline = time.monotonic() + within
    pending = list(calls)
    answers: list[Outcome] = []
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} calls still without an answer"
        outcomes = send_calls(urls, pending, clients)
        answers.extend(outcomes)
        pending = [o.call for o in outcomes if o.unknown]
        if pending:
            time.sleep(0.5)
    return answers


class Load:
    """Clients sending commands, each waiting for its answer before the next,
    from a thread of their own until stopped. Calls come from `next_call`."""

    def __init__(
        self,
        urls: Sequence[str],
        next_call: Callable[[random.Random, str], Call],
        *,
        clients: int = 16,
        prefix: str = "load",
        seed: int = 1,
        pause_after_failure: float = 0.05,
    ) -> None:
        self.urls = list(urls)
        self.next_call = next_call
        self.clients = clients
        self.prefix = prefix
        self.seed = seed
        self.pause_after_failure = pause_after_failure
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> list[Outcome]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(REQUEST_TIMEOUT + 10)
            assert not self._thread.is_alive(), "a client did not come back"
        return self.outcomes

    @property
    def acknowledged(self) -> int:
        return sum(1 for o in list(self.outcomes) if o.acknowledged)

    def wait_for_acknowledged(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.acknowledged < count:
            assert time.monotonic() < deadline, f"only {self.acknowledged} of {count} acknowledged"
            time.sleep(0.02)

    async def _main(self) -> None:
        await asyncio.gather(*(self._client(n) for n in range(self.clients)))

    async def _client(self, number: int) -> None:
        rng = random.Random(f"{self.seed}-{number}")
        connections = Connections()
        sent = 0
        try:
            while not self._stop.is_set():
                sent += 1
                call = self.next_call(rng, f"{self.prefix}-{number}-{sent}")
                url = self.urls[(number + sent) % len(self.urls)]
                outcome = await send(connections, url, call)
                self.outcomes.append(outcome)
                if outcome.status is None or outcome.status >= 500:
                    await asyncio.sleep(self.pause_after_failure)
        finally:
            connections.close()


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None  # None: no answer in time, or the connection failed
    headers: dict[str, str]
    body: Any
    seconds: float
    error: str | None = None


def ask(
    url: str,
    method: str,
    path: str,
    role: str | None = "admin",
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = REQUEST_TIMEOUT,
) -> Answer:
    """One request, as a plain client makes it, with a timeout."""
    all_headers = {**(auth(role) if role else {}), **(headers or {})}
    started = time.monotonic()
    try:
        response = httpx.request(
            method, url + path, json=body, headers=all_headers, timeout=timeout
        )
    except httpx.HTTPError as e:
        return Answer(None, {}, None, time.monotonic() - started, type(e).__name__)
    try:
        parsed = response.json()
    except ValueError:
        parsed = response.text
    return Answer(
        response.status_code,
        {k.lower(): v for k, v in response.headers.items()},
        parsed,
        time.monotonic() - started,
    )


# -- clients in processes of their own ----------------------------------------


@dataclass(frozen=True)
class Job:
    """What one client process does: send `calls` (each once), or, with
    `seconds`, mixed commands on `user_ids` for that long."""

    urls: tuple[str, ...]
    clients: int
    calls: tuple[Call, ...] = ()
    seconds: float = 0.0
    user_ids: tuple[str, ...] = ()
    prefix: str = "proc"
    seed: int = 1


async def _timed_load(job: Job) -> list[Outcome]:
    deadline = time.monotonic() + job.seconds
    outcomes: list[Outcome] = []

    async def client(number: int) -> None:
        rng = random.Random(f"{job.seed}-{job.prefix}-{number}")
        connections = Connections()
        sent = 0
        try:
            while time.monotonic() < deadline:
                sent += 1
                call = mixed_call(rng, f"{job.prefix}-{number}-{sent}", job.user_ids)
                url = job.urls[(number + sent) % len(job.urls)]
                outcomes.append(await send(connections, url, call))
        finally:
            connections.close()

    await asyncio.gather(*(client(n) for n in range(job.clients)))
    return outcomes


def _run_job(job: Job, ready: Any, go: Any, results: Any) -> None:
    ready.put(os.getpid())
    go.wait(60)
    if job.seconds:
        outcomes = asyncio.run(_timed_load(job))
    else:
        outcomes = asyncio.run(send_all(job.urls, job.calls, job.clients))
    results.put(outcomes)


def run_client_processes(jobs: Sequence[Job], timeout: float = 180.0) -> list[Outcome]:
    """Run each job in a process of its own, all starting at the same moment;
    every outcome of every process."""
    context = multiprocessing.get_context("spawn")
    ready, go, results = context.Queue(), context.Event(), context.Queue()
    processes = [context.Process(target=_run_job, args=(job, ready, go, results)) for job in jobs]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            ready.get(timeout=60)
        go.set()
        outcomes: list[Outcome] = []
        for _ in processes:
            outcomes.extend(results.get(timeout=timeout))
        for process in processes:
            process.join(30)
            assert process.exitcode == 0, f"a client process exited with {process.exitcode}"
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
    return outcomes


# -- the record, against the event store and the projection ---------------------


@dataclass(frozen=True, slots=True)
class Stored:
    position: int
    user_id: str
    version: int
    type: str
    key: str | None


def stored_events(database: Database) -> dict[int, Stored]:
    """Every event in the store, by position, read straight from the table."""
    found = rows(
        database,
        "SELECT notification_id, originator_id, originator_version, topic, "
        "convert_from(state, 'UTF8')::json FROM ledger_events ORDER BY notification_id",
    )
    events: dict[int, Stored] = {}
    for position, user_id, version, topic, state in found:
        cause = state.get("cause") or {}
        events[position] = Stored(
            position,
            user_id,
            version,
            topic.rpartition(".")[2],
            cause.get("idempotency_key"),
        )
    return events


def final_answers(outcomes: Sequence[Outcome]) -> dict[str, Outcome]:
    """Each call's definite answer (a 2xx or a 4xx), by Idempotency-Key."""
    answers: dict[str, Outcome] = {}
    for outcome in outcomes:
        if not outcome.unknown:
            answers.setdefault(outcome.call.key, outcome)
    return answers


def assert_acknowledged_are_recorded(database: Database, outcomes: Sequence[Outcome]) -> int:
    """Every 2xx names an event that is in the store: at the position it gave,
    for its user and version, with its id, type and Idempotency-Key. Returns how
    many acknowledgements were checked."""
    store = stored_events(database)
    checked = 0
    for outcome in outcomes:
        if not outcome.acknowledged:
            continue
        event = outcome.event
        found = store.get(event["position"])
        assert found is not None, f"acknowledged but not in the store: {event}"
        assert (found.user_id, found.version, found.type, found.key) == (
            event["user_id"],
            event["version"],
            event["type"],
            outcome.call.key,
        ), f"the store has {found} where {event} was acknowledged"
        assert event["id"] == event_id(found.user_id, found.version)
        checked += 1
    return checked


def assert_each_key_recorded_once(database: Database) -> int:
    """No Idempotency-Key has more than one event: nothing was applied twice.
    Returns how many keys the store holds."""
    keys = Counter(e.key for e in stored_events(database).values() if e.key is not None)
    twice = {key: n for key, n in keys.items() if n > 1}
    assert twice == {}, f"keys recorded more than once: {list(twice.items())[:5]}"
    return len(keys)


def assert_store_is_exactly_the_acknowledged(
    database: Database, outcomes: Sequence[Outcome]
) -> int:
    """Once every call has a definite answer: the store holds the acknowledged
    events and nothing else. Returns the number of events."""
    acknowledged = {o.event["position"] for o in outcomes if o.acknowledged}
    stored = set(stored_events(database))
    assert stored - acknowledged == set(), "events nobody was told about"
    assert acknowledged - stored == set(), "acknowledged events missing"
    return len(stored)


def assert_answers_add_up(outcomes: Sequence[Outcome]) -> int:
    """What each client was told about its user right after its command equals
    the fold, in stream order, of every acknowledged event of that user (and
    no balance is ever below 0). Needs the complete record of a settled run.
    Returns the number of users checked."""
    by_user: dict[str, dict[int, Outcome]] = defaultdict(dict)
    for outcome in outcomes:
        if outcome.acknowledged:
            by_user[outcome.event["user_id"]][outcome.event["version"]] = outcome
    for user_id, by_version in by_user.items():
        assert sorted(by_version) == list(range(1, len(by_version) + 1)), user_id
        credits = chat = 0
        for version in sorted(by_version):
            event, user = by_version[version].event, by_version[version].user
            amount = event["data"].get("amount") or 0
            match event["type"]:
                case "UserRegistered":
                    credits, chat = 10, 20
                case "CreditsGranted":
                    credits += amount
                case "CreditsSpent":
                    credits -= amount
                case "ChatMessagesGranted":
                    chat += amount
                case "ChatMessagesSpent":
                    chat -= amount
            assert credits >= 0 and chat >= 0, f"{user_id} below 0 at version {version}"
            assert (user["free_credits"], user["free_chat_messages"], user["version"]) == (
                credits,
                chat,
                version,
            ), f"{user_id} at version {version}: told {user}, history says {credits}/{chat}"
    return len(by_user)


def assert_projection_is_the_replay(database: Database, timeout: float = 60.0) -> LedgerAudit:
    """Once caught up, the users table equals a replay of the whole history:
    every row (audit_all), each row's version is its stream's length and its
    position its stream's last, so no event was skipped or applied twice."""
    wait_caught_up(database, timeout)
    ledger = Ledger.open(database)
    try:
        audit = audit_all(database, ledger)
    finally:
        ledger.close()
    assert audit.consistent, [m.as_dict() for m in audit.mismatches[:3]]
    assert audit.position == head(database)
    wrong = rows(
        database,
        "SELECT u.id, u.version, e.n, u.position, e.last FROM users u "
        "FULL JOIN (SELECT originator_id, count(*) AS n, max(notification_id) AS last "
        "FROM ledger_events GROUP BY originator_id) e ON e.originator_id = u.id "
        "WHERE u.version IS DISTINCT FROM e.n OR u.position IS DISTINCT FROM e.last",
    )
    assert wrong == [], f"rows that are not their stream: {wrong[:5]}"
    return audit


# -- projectors -----------------------------------------------------------------


def projector_child(served: ServedLedger, timeout: float = 30.0) -> psutil.Process:
    """The projector process of a `ledger serve` (its spawned child)."""
    assert served.process is not None
    deadline = time.monotonic() + timeout
    while True:
        for child in psutil.Process(served.process.pid).children():
            with contextlib.suppress(psutil.Error):
                if "spawn_main" in " ".join(child.cmdline()):
                    return child
        assert time.monotonic() < deadline, "no projector process"
        time.sleep(0.005)


def projector_holders(database: Database) -> list[str]:
    """The application_name of each session of this database holding the users
    projector's leader lock (PGAPPNAME names each process of a scenario)."""
    key = st.leader_lock("users")
    found = rows(
        database,
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND l.classid = ((%s::bigint >> 32) & 4294967295)::oid "
        "AND l.objid = (%s::bigint & 4294967295)::oid",
        (key, key),
    )
    return [name for (name,) in found]


# -- fixtures -------------------------------------------------------------------


class Servers:
    """`ledger serve` and `ledger project` processes of one test, all stopped
    (killed, if need be) when it ends."""

    def __init__(self) -> None:
        self.served: list[ServedLedger] = []
        self.projectors: list[subprocess.Popen[bytes]] = []

    def serve(
        self,
        database: Database,
        *,
        name: str = "ledger",
        port: int | None = None,
        args: Sequence[str] = (),
        **env: str,
    ) -> ServedLedger:
        served = ServedLedger(database, port=port, env={"PGAPPNAME": name, **env}, args=args)
        self.served.append(served)
        return served.start()

    def project(
        self, database: Database, *, name: str = "projector", **env: str
    ) -> subprocess.Popen[bytes]:
        process = ledger_process("project", database=database, env={"PGAPPNAME": name, **env})
        self.projectors.append(process)
        return process

    def close(self) -> None:
        """Kill every process left, with the projector processes of the servers."""
        for served in self.served:
            if served.process is not None and served.process.poll() is None:
                with contextlib.suppress(psutil.Error):
                    for child in psutil.Process(served.process.pid).children(recursive=True):
                        child.kill()
            served.stop(signal.SIGKILL)
        for process in self.projectors:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def other_database(server: Database, template: str) -> Iterator[Database]:
    """A second database of this run on the same server, with the tables."""
    name = f"{template.removesuffix('_template')}_other_{os.urandom(3).hex()}"
    rows(server, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield server.with_name(name)
    rows(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def servers() -> Iterator[Servers]:
    running = Servers()
    yield running
    running.close()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    home = server_home("private")
    postgres = PrivatePostgres(home / "postgres")
    yield postgres
    postgres.close()
    shutil.rmtree(home, ignore_errors=True)
