"""PostgreSQL stopped and started again under load: the API answers 503 with
Retry-After at once while it is gone, comes back by itself when it returns,
and loses nothing it acknowledged."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from api.settings import Settings
from api.supervisor import run_projector
from tests.helpers import ServedLedger, head, wait_until
from tests.reliability.conftest import (
    Load,
    Outcome,
    PrivatePostgres,
    Report,
    Servers,
    ask,
    assert_acknowledged_are_recorded,
    assert_answers_add_up,
    assert_each_key_recorded_once,
    assert_projection_is_the_replay,
    assert_store_is_exactly_the_acknowledged,
    final_answers,
    mixed_call,
    projector_holders,
    registrations,
    send_calls,
    settle,
)

pytestmark = pytest.mark.reliability

USERS = [f"user{i:03d}" for i in range(100)]
CLIENTS = 16
OUTAGE_SECONDS = 3.0
#: "Within a few seconds": no request waits longer than this for its 503.
PROMPT = 5.0
#: Once PostgreSQL is back, commands and reads work again within this, with no restart.
RECOVERY = 15.0
#: A projector retries its connection at least every 5 s: back within this.
PROJECTOR_BACK = 10.0

#: What a reader asks while PostgreSQL is gone: each must be a prompt 503.
READS = [
    ("GET", f"/v1/users/{USERS[0]}"),
    ("GET", f"/v1/users/{USERS[0]}?min_position=1"),
    ("GET", f"/v1/users/{USERS[0]}/events"),
    ("GET", f"/v1/users/{USERS[0]}/state?version=1"),
    ("GET", "/v1/events?limit=10"),
    ("GET", f"/v1/audit/users/{USERS[0]}"),
    ("GET", "/v1/projections"),
    ("GET", "/readyz"),
]


def assert_prompt_503(
    what: str, status: int | None, retry_after: str | None, seconds: float
) -> None:
    assert status == 503, f"{what}: {status} while PostgreSQL is down"
    assert retry_after is not None and retry_after.isdigit(), f"{what}: no Retry-After"
    assert seconds <= PROMPT, f"{what}: took {seconds:.1f}s to say 503"


def test_a_postgres_outage_answers_503_and_recovers_by_itself(
    private_postgres: PrivatePostgres, servers: Servers, report: Report
) -> None:
    postgres = private_postgres
    database = postgres.database
    served = servers.serve(database)
    assert served.process is not None
    pid = served.process.pid
    registered = send_calls([served.url], registrations(USERS), CLIENTS)
    assert all(o.status == 201 for o in registered)

    outages: list[tuple[str, float, float]] = []
    reads_during_outage = 0
    recoveries: list[float] = []
    with (
        Load([served.url], lambda r, key: mixed_call(r, key, USERS), clients=CLIENTS) as load,
        ThreadPoolExecutor(len(READS)) as readers,
    ):
        load.wait_for_acknowledged(500)
        # A clean stop (fast: sessions are ended), then a crash (immediate).
        for mode in ("fast", "immediate"):
            postgres.stop(mode)
            down = time.monotonic()
            while time.monotonic() - down < OUTAGE_SECONDS:
                # Readers ask, all at once; and liveness stays up: nothing would
                # be gained by restarting the process.
                asked = readers.map(lambda read: ask(served.url, *read), READS)
                for (method, path), answer in zip(READS, asked, strict=True):
                    assert_prompt_503(
                        f"{method} {path}",
                        answer.status,
                        answer.headers.get("retry-after"),
                        answer.seconds,
                    )
                    reads_during_outage += 1
                assert ask(served.url, "GET", "/healthz", role=None).status == 200
            up_started = time.monotonic()
            postgres.start()
            up = time.monotonic()
            outages.append((mode, down, up_started))

            def serving_again(since: float = up) -> bool:
                committed = any(o.acknowledged and o.started >= since for o in load.outcomes)
                reads = [ask(served.url, "GET", path).status for _, path in READS]
                return committed and reads == [200] * len(READS)

            wait_until(serving_again, timeout=RECOVERY, every=0.2)
            recoveries.append(time.monotonic() - up)
            acknowledged = load.acknowledged
            load.wait_for_acknowledged(acknowledged + 300)

    outcomes = load.outcomes
    assert served.process is not None and served.process.pid == pid, "the server was restarted"
    assert served.process.poll() is None

    # Every answer under load: a 2xx or 4xx, or a prompt 503 with Retry-After;
    # never a 500, never silence.
    assert [o for o in outcomes if o.status is None] == [], "requests without an answer"
    assert {o.status for o in outcomes if (o.status or 0) >= 500} <= {503}
    unavailable = [o for o in outcomes if o.status == 503]
    for o in unavailable:
        assert_prompt_503(o.call.kind, o.status, o.retry_after, o.seconds)
        assert o.content_type == "application/problem+json"
        assert o.problem == "database-unavailable"
    during = [o for o in outcomes if any(d <= o.started and o.finished <= u for _, d, u in outages)]
    assert during, "no command was sent while PostgreSQL was down"
    assert all(o.status == 503 for o in during), {o.status for o in during}

    # The clients send each 503'd command again, same key: each gets its answer.
    retried = settle([served.url], [o.call for o in unavailable])
    everything: list[Outcome] = [*registered, *outcomes, *retried]
    answers = final_answers(everything)
    assert set(answers) == {o.call.key for o in everything}

    checked = assert_acknowledged_are_recorded(database, everything)
    assert_each_key_recorded_once(database)
    events = assert_store_is_exactly_the_acknowledged(database, everything)
    assert_answers_add_up(everything)
    audit = assert_projection_is_the_replay(database)

    report(
        "postgres stopped and started mid-load",
        outages=",".join(f"{mode} {u - d:.1f}s" for mode, d, u in outages),
        commands_during_outage=len(during),
        answered_503=len(unavailable),
        slowest_503_s=round(max(o.seconds for o in unavailable), 2),
        reads_during_outage=reads_during_outage,
        recovered_after_s=",".join(f"{r:.1f}" for r in recoveries),
        committed_before_503=sum(o.replayed for o in retried),
        acknowledged=sum(o.acknowledged for o in answers.values()),
        acknowledgements_checked=checked,
        events=events,
        audit_users=audit.users_checked,
        audit_mismatches=len(audit.mismatches),
        status_500=sum(o.status == 500 for o in outcomes),
    )


def test_the_event_log_answers_503_promptly_while_postgres_is_down(
    private_postgres: PrivatePostgres, servers: Servers, report: Report
) -> None:
    served = servers.serve(private_postgres.database)
    assert ask(served.url, "POST", "/v1/users", body={"id": USERS[0]}).status == 201
    assert ask(served.url, "GET", "/v1/events?limit=10").status == 200

    private_postgres.stop("fast")
    answer = ask(served.url, "GET", "/v1/events?limit=10", timeout=PROMPT + 1)

    report(
        "event log while postgres is down",
        status=answer.status,
        error=answer.error,
        seconds=round(answer.seconds, 1),
    )
    assert_prompt_503(
        "GET /v1/events", answer.status, answer.headers.get("retry-after"), answer.seconds
    )


def test_a_projector_started_while_postgres_is_away_projects_once_it_is_back(
    private_postgres: PrivatePostgres, report: Report
) -> None:
    """The body of `ledger serve`'s projector process (and of `ledger project`),
    started while PostgreSQL is stopped: it waits, then leads and projects."""
    postgres = private_postgres
    postgres.stop("fast")
    stop = threading.Event()
    projector = threading.Thread(
        target=run_projector, args=(postgres.database, Settings(), stop), daemon=True
    )
    projector.start()
    try:
        time.sleep(4.0)  # longer than a connection attempt waits
        assert projector.is_alive()
        postgres.start()
        with ServedLedger(postgres.database, args=["--no-projector"]) as served:
            answer = ask(served.url, "POST", "/v1/users", body={"id": USERS[0]})
            assert answer.status in (201, 409)
            position = head(postgres.database)
            read = ask(served.url, "GET", f"/v1/users/{USERS[0]}?min_position={position}")
            holders = projector_holders(postgres.database)
            report(
                "projector started while postgres was away",
                waited_s=4.0,
                read_your_write=read.status,
                projector_holders=len(holders),
            )
            assert read.status == 200
            assert len(holders) == 1
    finally:
        stop.set()
        projector.join(15)


def test_a_postgres_that_stops_answering_gets_503s_not_hangs(
    private_postgres: PrivatePostgres, report: Report
) -> None:
    """PostgreSQL frozen (SIGSTOP: its connections stay open, nothing answers),
    as a stalled server or a silent network path would be: commands and reads
    are answered 503 within their deadlines, and all is well once it thaws."""
    postgres = private_postgres
    with ServedLedger(postgres.database) as served:
        assert ask(served.url, "POST", "/v1/users", body={"id": "frozen"}).status == 201
        assert ask(served.url, "GET", "/v1/users/frozen").status in (200, 404)
        frozen = [p for p in psutil.process_iter() if _cwd(p) == postgres.pgdata]
        for process in frozen:
            process.suspend()
        try:
            command = ask(
                served.url,
                "POST",
                "/v1/users/frozen/credits/grants",
                body={"amount": 1},
                timeout=40,
            )
            read = ask(served.url, "GET", "/v1/users/frozen", timeout=40)
        finally:
            for process in frozen:
                process.resume()
        after = ask(served.url, "POST", "/v1/users/frozen/credits/grants", body={"amount": 1})
        report(
            "postgres frozen",
            processes=len(frozen),
            command_status=command.status,
            command_s=round(command.seconds, 1),
            read_status=read.status,
            read_s=round(read.seconds, 1),
            after_thaw=after.status,
        )
        assert frozen
        assert (command.status, read.status) == (503, 503)
        assert command.seconds < 25 and read.seconds < 20  # deadlines, then the cancel
        assert after.status == 201


def _cwd(process: psutil.Process) -> Path | None:
    try:
        return Path(process.cwd())
    except psutil.Error:
        return None
