"""Browser fixtures: Debian's Chromium, driven by Playwright, on the real
`ledger serve` (the end-to-end suite's served ledgers, on real PostgreSQL).

The browser is the system's (/usr/bin/chromium, or LEDGER_CHROMIUM): Playwright
never downloads one. Every page a test opens fails the test if it shows a
dialog, throws, or breaks its Content-Security-Policy.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.e2e.conftest import Api, serve_ledger, shared_api
from tests.helpers import API_KEYS

__all__ = ["serve_ledger", "shared_api"]

CHROMIUM = os.environ.get("LEDGER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 375, "height": 812}

expect.set_options(timeout=15_000)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (.ci/run does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Watched:
    """What a page did that no page of the console may do."""

    def __init__(self) -> None:
        self.dialogs: list[str] = []
        self.errors: list[str] = []

    def dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            self.errors.append(message.text)

    def check(self) -> None:
        assert self.dialogs == [], f"the page opened dialogs: {self.dialogs}"
        assert self.errors == [], f"the page failed: {self.errors}"


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """`open_page(viewport=...)`: a page of a fresh browser context (its own
    session storage), watched for dialogs, errors and CSP violations."""
    watched: list[Watched] = []
    contexts = []

    def open_(viewport: ViewportSize | None = None) -> Page:
        context = browser.new_context(viewport=viewport or DESKTOP)
        contexts.append(context)
        page = context.new_page()
        watch = Watched()
        watched.append(watch)
        page.on("dialog", watch.dialog)
        page.on("console", watch.console)
        page.on("pageerror", lambda error: watch.errors.append(f"{error.name}: {error.message}"))
        return page

    yield open_
    for context in contexts:
        with contextlib.suppress(Exception):
            context.close()
    for watch in watched:
        watch.check()


@pytest.fixture
def page(open_page: Callable[..., Page]) -> Page:
    return open_page()


def sign_in(page: Page, url: str, role: str = "admin") -> None:
    """Open the console and sign in with `role`'s key, as a person would."""
    page.goto(f"{url}/console")
    page.get_by_label("API key").fill(API_KEYS[role])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Signed in:")).to_be_visible()


def open_user(page: Page, user_id: str) -> None:
    """Find a user by id, with the box in the header."""
    page.get_by_label("User id").fill(user_id)
    page.get_by_label("User id").press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"User {user_id}")


def history_of(api: Api, user_id: str, events: int, reason: str = "image generation") -> None:
    """`events` more events for `user_id`: grants and spends of credits, in turn."""
    for i in range(events):
        if i % 2 == 0:
            body = {"amount": 1 + i % 7, "reason": reason}
            response = api.post(f"/v1/users/{user_id}/credits/grants", body)
        else:
            response = api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 1})
        assert response.status_code == 201, response.text
