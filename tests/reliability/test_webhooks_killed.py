"""The webhook outbox and senders killed -9 again and again while commands flow
and deliveries are in flight: every message still arrives, at least once,
signed; a message that arrives twice has the same `webhook-id` and the same
body; each user's messages first arrive in position order."""

from __future__ import annotations

import contextlib
import random
import subprocess
import time

import httpx
import psutil
import pytest

from ledger.db import Database
from tests.helpers import rows, wait_until
from tests.reliability.conftest import Servers, auth
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.reliability

USERS = [f"hooked{i:02d}" for i in range(20)]
KILLS = 8
ENV = {
    "LEDGER_WEBHOOKS_ALLOW_HTTP": "1",
    "LEDGER_WEBHOOKS_ALLOW_PRIVATE": "1",
    "LEDGER_WEBHOOKS_TIMEOUT_SECONDS": "1",  # leases of 10 s: a killed sender's come back soon
}


def test_senders_and_outbox_killed_mid_delivery_lose_nothing(
    database: Database, servers: Servers
) -> None:
    served = servers.serve(database, args=["--no-projector"], **ENV)
    rng = random.Random(16)
    with Receiver() as receiver, httpx.Client(base_url=served.url, timeout=30) as http:
        receiver.answer("/hooks", lambda _: (200, rng.uniform(0.0, 0.1)))
        created = http.post(
            "/v1/webhook-endpoints",
            json={"url": receiver.url("/hooks"), "event_types": ["*"]},
            headers=auth("admin"),
        )
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        running: list[subprocess.Popen[bytes]] = [
            servers.project(database, name=f"projector-{n}", **ENV) for n in range(2)
        ]
        for user_id in USERS:
            assert http.post("/v1/users", json={"id": user_id}, headers=auth("admin")).is_success

        kills = 0
        for round_ in range(KILLS):
            for _ in range(15):
                user_id = rng.choice(USERS)
                spent = http.post(
                    f"/v1/users/{user_id}/chat-messages/spends",
                    json={"amount": 1},
                    headers=auth("service"),
                )
                assert spent.status_code in (201, 409), spent.text
            wait_until(lambda: len(receiver.received) > round_ * 10, timeout=30)  # noqa: B023
            time.sleep(rng.uniform(0.05, 0.4))  # deliveries in flight
            victim = running.pop(rng.randrange(len(running)))
            with contextlib.suppress(psutil.Error):  # its webhooks process: outbox, sender
                for child in psutil.Process(victim.pid).children(recursive=True):
                    child.kill()
            victim.kill()  # SIGKILL: no chance to finish or clean up
            victim.wait()
            kills += 1
            running.append(servers.project(database, name=f"projector-k{round_}", **ENV))

        def all_delivered() -> bool:
            ((pending,),) = rows(
                database, "SELECT count(*) FROM ledger_webhook_messages WHERE status <> 'succeeded'"
            )
            ((queued,),) = rows(database, "SELECT count(*) FROM ledger_webhook_messages")
            ((events,),) = rows(database, "SELECT count(*) FROM ledger_events")
            return pending == 0 and queued >= events

        wait_until(all_delivered, timeout=90, every=0.2)
        got = list(receiver.received)

    events = rows(database, "SELECT notification_id, originator_id FROM ledger_events")
    messages = dict(rows(database, "SELECT id, body FROM ledger_webhook_messages"))
    spent_positions = {p for p, _ in events}
    assert len(messages) >= len(events)  # one per event, and depletions beside
    assert {r.id for r in got} == set(messages), "a message was lost, or one was made up"
    for r in got:
        assert r.verified_by(secret)
        assert r.body.decode() == messages[r.id], "the same id with another body"
    first_seen: dict[str, list[int]] = {}
    seen: set[str] = set()
    for r in got:
        if r.id in seen:
            continue
        seen.add(r.id)
        event = r.payload["data"]["event"]
        assert event["position"] in spent_positions
        first_seen.setdefault(event["user_id"], []).append(event["position"])
    for user_id, positions in first_seen.items():
        assert positions == sorted(positions), f"{user_id}'s messages out of order"
    duplicates = len(got) - len(seen)
    print(f"{kills} kills, {len(got)} arrivals of {len(seen)} messages, {duplicates} again")
