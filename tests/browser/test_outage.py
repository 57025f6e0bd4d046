"""PostgreSQL stopped and started again while the console is open: the page
says the ledger cannot answer, keeps asking, and shows the ledger again by
itself once PostgreSQL is back. A PostgreSQL of the test's own, stopped with
pg_ctl as an outage would stop it."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect

from api.bootstrap import init_database
from tests.browser.conftest import open_user, sign_in
from tests.e2e.conftest import Api
from tests.helpers import ServedLedger
from tests.postgres import PrivatePostgres, server_home


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    home = server_home("console")
    private = PrivatePostgres(home / "postgres")
    init_database(private.database)
    yield private
    private.close()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def api(postgres: PrivatePostgres) -> Iterator[Api]:
    with ServedLedger(postgres.database) as served:
        client = Api(served)
        client.wait_until_running()
        yield client
        client.close()


def test_the_page_says_the_database_is_down_and_recovers_when_it_is_back(
    postgres: PrivatePostgres, api: Api, open_page: Callable[..., Page]
) -> None:
    user_id = api.registered("outage")
    page = open_page()
    sign_in(page, api.url)
    open_user(page, user_id)
    expect(page.locator("#timeline tbody tr")).to_have_count(1)
    banner = page.locator("#banner")

    postgres.stop()
    try:
        outage = banner.locator(".outage")
        expect(outage).to_contain_text("The ledger cannot answer now.", timeout=20_000)
        expect(outage).to_contain_text("database-unavailable")
        expect(outage).to_contain_text("Retrying")
        # A page opened meanwhile waits for the ledger rather than break.
        page.get_by_role("link", name="Ledger").click()
        expect(page.locator("#projections")).to_contain_text("Loading")
        expect(outage).to_be_visible()
    finally:
        postgres.start()

    expect(banner.locator(".recovered")).to_have_text("The ledger answers again.", timeout=30_000)
    expect(page.locator("#projections .live")).to_be_visible(timeout=30_000)
    expect(banner.locator(".outage")).to_have_count(0)
    open_user(page, user_id)
    expect(page.locator("#audit")).to_contain_text("Consistent")
