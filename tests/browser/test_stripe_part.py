"""Stripe's events on the ledger's page, for a ledger that takes them: what
arrived and what became of it, Stripe's own strings shown as text, each
purchase leading to its user's page."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import sign_in
from tests.e2e.conftest import Api
from tests.stripe_events import CATALOG_TOML, SECRET, Payment, signed

MARKUP = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def api(
    serve_ledger: Callable[..., contextlib.AbstractContextManager[Api]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Api]:
    catalog = tmp_path_factory.mktemp("stripe") / "catalog.toml"
    catalog.write_text(CATALOG_TOML)
    with serve_ledger(
        LEDGER_STRIPE_WEBHOOK_SECRETS=SECRET, LEDGER_STRIPE_CATALOG=str(catalog)
    ) as served:
        yield served


def deliver(api: Api, payment: Payment) -> dict[str, object]:
    text, signature = signed(payment.completed())
    headers = {"Content-Type": "application/json", "Stripe-Signature": signature}
    answer = api.request(
        "POST", "/v1/stripe/webhook", role=None, headers=headers, content=text.encode()
    )
    return dict(api.json(answer))


def test_stripe_events_are_listed_as_text_and_lead_to_their_users(api: Api, page: Page) -> None:
    bought = Payment(api.new_id("buyer"), sku="lifetime", amount=4900)
    assert deliver(api, bought)["status"] == "applied"
    refused = Payment(api.new_id("buyer"), sku=MARKUP, amount=900)
    rejected = deliver(api, refused)
    assert rejected["status"] == "rejected"
    api.current(bought.user_id)

    sign_in(page, api.url)

    stripe = page.locator("#stripe")
    applied = stripe.locator("tbody tr", has_text=bought.session_id)
    expect(applied).to_contain_text("applied")
    expect(stripe.locator("tbody tr", has_text=refused.session_id)).to_contain_text(
        str(rejected["error"])
    )
    assert MARKUP in str(rejected["error"])
    assert page.locator("main img").count() == 0
    stripe.get_by_label("Outcome").select_option("rejected")
    expect(stripe.locator("tbody tr")).to_have_count(1)
    expect(stripe.locator("tbody tr")).to_contain_text(refused.session_id)
    stripe.get_by_label("Outcome").select_option("")

    applied.get_by_role("link", name=bought.user_id).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"User {bought.user_id}")
    purchase = page.locator("#timeline tbody tr", has_text="PurchaseCompleted")
    expect(purchase).to_contain_text("Stripe evt_")
    expect(page.locator("#balances")).to_contain_text("Level paid, renewal lifetime")
