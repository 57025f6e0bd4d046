"""Webhooks out, end to end: `ledger serve` sends its events to a real receiver
on 127.0.0.1, which verifies every signature with the `standardwebhooks`
package; the endpoints API as an admin uses it."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers import MovableClock, wait_until
from tests.webhook_receiver import Receiver

if TYPE_CHECKING:
    from tests.e2e.conftest import Api


@pytest.fixture(scope="module")
def clock() -> Iterator[MovableClock]:
    with tempfile.TemporaryDirectory() as folder:
        yield MovableClock(Path(folder) / "offset")


@pytest.fixture(scope="module")
def hooks(
    serve_ledger: Callable[..., contextlib.AbstractContextManager[Api]], clock: MovableClock
) -> Iterator[Api]:
    """A ledger that may send to 127.0.0.1 over http, on a clock the tests move."""
    assert clock.path is not None
    with serve_ledger(
        LEDGER_WEBHOOKS_ALLOW_HTTP="1",
        LEDGER_WEBHOOKS_ALLOW_PRIVATE="1",
        LEDGER_WEBHOOKS_TIMEOUT_SECONDS="1",
        LEDGER_CLOCK_OFFSET_FILE=str(clock.path),
    ) as served:
        yield served


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def endpoint(api: Api, url: str, **fields: Any) -> dict[str, Any]:
    body = {"url": url, "event_types": ["*"], **fields}
    return dict(api.json(api.post("/v1/webhook-endpoints", body), 201))


def test_an_endpoint_hears_of_a_registration_signed_with_its_secret(
    hooks: Api, receiver: Receiver
) -> None:
    created = endpoint(hooks, receiver.url("/first"))
    user_id = hooks.registered("hooked")

    wait_until(lambda: len(receiver.at("/first")) >= 1, timeout=15)

    (got,) = receiver.at("/first")
    assert got.verified_by(created["secret"])
    assert got.type == "user.registered"
    assert got.payload["data"]["user"]["id"] == user_id
    assert got.payload["data"]["event"]["type"] == "UserRegistered"
