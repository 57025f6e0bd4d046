"""Operators watching the ledger: projections and a rebuild's live progress,
the chain's head, and what an admin may do that a reader may not, in a real
browser on the real served ledger."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import open_user, sign_in
from tests.e2e.conftest import Api
from tests.helpers import ledger_process

#: Enough history for a rebuild to last a few seconds, watched as it goes.
EVENTS = 30_000


@pytest.fixture(scope="module")
def api(serve_ledger: Callable[..., contextlib.AbstractContextManager[Api]]) -> Iterator[Api]:
    """A ledger of its own (its tests rebuild it), with a history of EVENTS."""
    with serve_ledger() as served:
        generate = ledger_process(
            "generate", "--users", "300", "--events", str(EVENTS), database=served.database
        )
        assert generate.wait(timeout=240) == 0
        served.wait_until_running(timeout=120)
        yield served


def test_a_reader_sees_the_ledger_and_no_action(api: Api, page: Page) -> None:
    user_id = api.registered("read-only")
    sign_in(page, api.url, "reader")

    projections = page.locator("#projections")
    expect(projections.get_by_role("row", name="users")).to_contain_text("running")
    expect(page.get_by_text("This key reads only: actions are hidden.")).to_be_visible()
    expect(page.get_by_text("Signed in: read-only key")).to_be_visible()
    for admin_part in ("#chain", "#stripe", "#webhooks"):
        expect(page.locator(admin_part)).to_have_count(0)
    expect(page.get_by_role("button", name="Rebuild the users table")).to_have_count(0)

    open_user(page, user_id)
    expect(page.locator("#timeline tbody tr")).to_have_count(1)
    expect(page.locator("main button.action")).to_have_count(0)


def test_an_admin_sees_the_chain_head_and_only_the_parts_that_have_landed(
    api: Api, page: Page
) -> None:
    head = api.json(api.get("/v1/chain/head"))
    webhooks = api.get("/v1/webhook-endpoints").status_code

    sign_in(page, api.url)

    chain = page.locator("#chain")
    expect(chain).to_contain_text(head["hash"])
    expect(page.locator("#stripe")).to_contain_text("No Stripe events received.")
    if webhooks == 404:  # not in this release: absent, not broken
        expect(page.locator("#webhooks")).to_have_count(0)
    else:
        expect(page.locator("#webhooks h2")).to_have_text("Webhook endpoints")
    expect(page.get_by_text("Signed in: admin key")).to_be_visible()


def test_an_admin_starts_a_rebuild_and_watches_it_reach_live(api: Api, page: Page) -> None:
    sign_in(page, api.url)
    expect(page.locator("#projections .live")).to_be_visible()

    page.get_by_role("button", name="Rebuild the users table").click()

    expect(page.get_by_text("Rebuild requested.")).to_be_visible()
    # Seen all at once, in one state of the page: the rebuild's status, its
    # phase, its rate and time left, and a progress bar.
    page.wait_for_function(
        r"""() => {
            const part = document.querySelector("#projections");
            const progress = part.querySelector(".rebuild-progress");
            return part.querySelector(".status")?.textContent === "rebuilding"
                && part.querySelector("progress") !== null
                && /phase [a-z-]+; .* events\/s; about .* left/.test(progress?.textContent ?? "");
        }""",
        timeout=30_000,
        polling=50,
    )
    expect(page.locator("#projections .live")).to_be_visible(timeout=120_000)
    expect(page.locator("#projections .status")).to_have_text("running")
    expect(page.locator("#projections .last-rebuild")).to_contain_text("Last rebuild: done")
    assert api.projection()["rebuild"]["phase"] == "done"
