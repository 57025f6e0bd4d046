"""Webhook endpoints on the ledger's page: each endpoint, whether it is
delivering, its failed deliveries with their last attempt, and a retry that
sends one again (the receiver verifies what it gets)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import sign_in
from tests.e2e.conftest import Api
from tests.helpers import MovableClock, wait_until
from tests.webhook_receiver import Receiver, attempts, deliveries, sending_here

MARKUP = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def clock() -> Iterator[MovableClock]:
    with tempfile.TemporaryDirectory() as folder:
        yield MovableClock(Path(folder) / "offset")


@pytest.fixture(scope="module")
def api(
    serve_ledger: Callable[..., contextlib.AbstractContextManager[Api]], clock: MovableClock
) -> Iterator[Api]:
    with serve_ledger(**sending_here(clock)) as served:
        yield served


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def test_a_failed_delivery_is_shown_and_sent_again_from_the_page(
    api: Api, receiver: Receiver, clock: MovableClock, page: Page
) -> None:
    receiver.answer("/failing", lambda _: (503, 0.0))
    body = {
        "url": receiver.url("/failing"),
        "event_types": ["user.registered"],
        "description": MARKUP,
    }
    endpoint = api.json(api.post("/v1/webhook-endpoints", body), 201)
    user_id = api.registered("hooked")
    for tried in range(1, 9):  # the whole schedule, each step brought on by moving the clock
        wait_until(lambda: attempts(api, endpoint["id"]) == tried, timeout=15)  # noqa: B023
        clock.advance(11 * 3600 + 60)
    wait_until(lambda: bool(deliveries(api, endpoint["id"], status="failed")), timeout=20)
    (failed,) = deliveries(api, endpoint["id"], status="failed")

    sign_in(page, api.url)
    part = page.locator("#webhooks")
    expect(part.locator("article h3")).to_have_text(receiver.url("/failing"))
    expect(part.locator("article")).to_contain_text(MARKUP)
    expect(part.locator("article")).to_contain_text("failing since")
    assert page.locator("main img").count() == 0
    row = part.locator("tbody tr", has_text=failed["id"])
    expect(row).to_contain_text("user.registered")
    expect(row).to_contain_text("503")
    expect(row.get_by_role("link", name=user_id)).to_be_visible()

    receiver.answer("/failing", lambda _: (204, 0.0))
    row.get_by_role("button", name="Retry").click()
    expect(part.locator(".notice")).to_have_text(f"{failed['id']} queued again.")
    expect(part).to_contain_text("No failed deliveries.")  # it is pending, then delivered
    wait_until(lambda: bool(deliveries(api, endpoint["id"], status="succeeded")), timeout=15)
    assert receiver.at("/failing")[-1].id == failed["id"]
    assert receiver.at("/failing")[-1].verified_by(endpoint["secret"])
