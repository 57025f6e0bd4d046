"""One dead endpoint (it takes every request and never answers) does not delay
a live one: each endpoint has a few delivery slots of its own."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

import psutil
import pytest

from tests.helpers import wait_until
from tests.webhook_receiver import Receiver

if TYPE_CHECKING:
    from tests.e2e.conftest import Api

PER_ENDPOINT, SLOTS = 4, 32  # set small here, so that a few users can fill them
USERS = 40  # more than the sender's slots: a dead endpoint could take them all


@pytest.fixture(scope="module")
def hooks(serve_ledger: Callable[..., contextlib.AbstractContextManager[Api]]) -> Iterator[Api]:
    with serve_ledger(
        LEDGER_WEBHOOKS_ALLOW_HTTP="1",
        LEDGER_WEBHOOKS_ALLOW_PRIVATE="1",
        LEDGER_WEBHOOKS_TIMEOUT_SECONDS="6",
        LEDGER_WEBHOOKS_PER_ENDPOINT=str(PER_ENDPOINT),
        LEDGER_WEBHOOKS_CONCURRENCY=str(SLOTS),
    ) as served:
        yield served


def test_a_dead_endpoint_does_not_delay_a_live_one(hooks: Api) -> None:
    with Receiver() as receiver:
        receiver.answer("/dead", lambda _: (200, 30.0))
        for path in ("/dead", "/live"):
            body = {"url": receiver.url(path), "event_types": ["user.registered"]}
            hooks.json(hooks.post("/v1/webhook-endpoints", body), 201)

        for _ in range(USERS):
            hooks.register()
        wait_until(lambda: len(receiver.at("/live")) == USERS, timeout=30)

        lags = [
            r.at - datetime.fromisoformat(r.payload["data"]["event"]["recorded_at"]).timestamp()
            for r in receiver.at("/live")
        ]
        assert max(lags) < 3.0, f"the live endpoint waited {max(lags):.1f} s"
        assert len(receiver.at("/dead")) <= PER_ENDPOINT  # its own slots, and no more


def test_deliveries_run_at_a_lower_cpu_priority_than_commands(hooks: Api) -> None:
    """The webhooks process (a child of the projector's) yields the CPU: its
    nice value is LEDGER_WEBHOOKS_NICE (5) above the API's and the projector's."""
    assert hooks.served.process is not None
    top = psutil.Process(hooks.served.process.pid)

    def niceness() -> list[int]:
        with contextlib.suppress(psutil.Error):
            return sorted(p.nice() - top.nice() for p in top.children(recursive=True))
        return []

    wait_until(lambda: 5 in niceness(), timeout=15)
    assert niceness().count(5) == 1, niceness()
    assert set(niceness()) == {0, 5}, niceness()
