"""PostgreSQL stopped and started again under load: the API answers 503 with
Retry-After at once while it is gone, comes back by itself when it returns,
and loses nothing it acknowledged."""

from __future__ import annotations

import contextlib
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

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
    projector_child,
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


def api_up_projector_starting(postgres: PrivatePostgres, servers: Servers) -> ServedLedger:
    """`ledger serve` with its API listening (so past its own connecting) and its
    projector process not yet active: a start a few tries may take to catch."""
    for _ in range(5):
        env = {"PGAPPNAME": "serve", "LEDGER_WAIT_TIMEOUT_SECONDS": "2"}
        served = ServedLedger(postgres.database, env=env)
        servers.served.append(served)
        served.start()
        if projector_holders(postgres.database) == []:
            return served
        served.stop(signal.SIGKILL)
    pytest.skip("the projector process was always active before the API listened")


def test_a_server_starting_as_postgres_goes_away_projects_once_it_is_back(
    private_postgres: PrivatePostgres, servers: Servers, report: Report
) -> None:
    postgres = private_postgres
    # `ledger serve` is up and listening; its projector process is still starting,
    # when PostgreSQL goes away for a few seconds.
    served = api_up_projector_starting(postgres, servers)
    child = projector_child(served)
    postgres.stop("fast")
    time.sleep(4.0)  # longer than a connection attempt waits
    postgres.start()
    assert served.process is not None and served.process.poll() is None

    # Once PostgreSQL is back, commands work and the projection follows them.
    def registered() -> bool:
        return ask(served.url, "POST", "/v1/users", body={"id": USERS[0]}).status in (201, 409)

    wait_until(registered, timeout=RECOVERY, every=0.2)

    def projecting() -> bool:
        (item,) = ask(served.url, "GET", "/v1/projections").body["items"]
        return projector_holders(postgres.database) != [] and item["lag"] == 0

    with contextlib.suppress(AssertionError):
        wait_until(projecting, timeout=PROJECTOR_BACK, every=0.5)
    (item,) = ask(served.url, "GET", "/v1/projections").body["items"]
    position = head(postgres.database)
    read = ask(served.url, "GET", f"/v1/users/{USERS[0]}?min_position={position}")

    report(
        "server starting as postgres goes away",
        projector_process_alive=child.is_running() and child.status() != psutil.STATUS_ZOMBIE,
        read_your_write=read.status,
        projection_status=item["status"],
        projection_lag=item["lag"],
    )
    assert read.status == 200
    assert projector_holders(postgres.database) != []
