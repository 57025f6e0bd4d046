"""The console's pictures in the README: a user's page and the ledger's page,
taken of a demo ledger (`make screenshots` keeps them in docs/; otherwise
they go to a temporary folder and are only checked)."""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import open_user, sign_in
from tests.e2e.conftest import Api

PNG = b"\x89PNG\r\n\x1a\n"
#: The pictures stop there: the timeline's first rows, not all of them.
HEIGHT = 2600


@pytest.fixture(scope="module")
def api(serve_ledger: Callable[..., contextlib.AbstractContextManager[Api]]) -> Iterator[Api]:
    """A demo ledger of its own: the pictures show only what the demo made."""
    with serve_ledger() as served:
        yield served


def demo_user(api: Api) -> str:
    """A user with a history worth looking at."""
    user_id = "user_42"
    api.register(user_id)
    grant = {"amount": 120, "reason": "December promotion", "expires_at": "2099-12-31T23:59:59Z"}
    api.check_command(api.post(f"/v1/users/{user_id}/credits/grants", {**grant, "priority": 10}))
    for i in range(90):
        spend = {"amount": 1 + i % 3, "reason": "image generation" if i % 2 else "chat reply"}
        api.check_command(api.post(f"/v1/users/{user_id}/credits/spends", spend))
        if i % 30 == 29:
            api.check_command(
                api.post(f"/v1/users/{user_id}/credits/grants", {"amount": 40, "reason": "top-up"})
            )
        if i % 6 == 0:
            api.check_command(api.post(f"/v1/users/{user_id}/chat-messages/spends", {"amount": 1}))
    api.json(
        api.post(
            f"/v1/users/{user_id}/credits/holds",
            {"amount": 5, "reason": "chat reply", "ttl_seconds": 3600},
        ),
        201,
    )
    api.json(
        api.put(f"/v1/users/{user_id}/allowances/chat-messages", {"amount": 20, "period": "month"})
    )
    api.current(user_id)
    return user_id


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG), f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def shoot(page: Page, path: Path) -> None:
    page.wait_for_timeout(300)  # let the last section settle
    height = min(page.evaluate("() => document.documentElement.scrollHeight"), HEIGHT)
    page.screenshot(
        path=str(path), full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": height}
    )


def test_screenshots_of_the_user_page_and_the_ledger_page(
    api: Api, page: Page, tmp_path: Path
) -> None:
    folder = Path(os.environ.get("LEDGER_SCREENSHOTS_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    user_id = demo_user(api)

    sign_in(page, api.url)
    expect(page.locator("#projections .live")).to_be_visible()
    expect(page.locator("#stripe .body")).to_have_attribute("aria-busy", "false")
    shoot(page, folder / "console-ledger.png")
    open_user(page, user_id)
    expect(page.locator("#timeline tbody tr")).to_have_count(25)
    expect(page.locator("#chart-free_credits polyline")).to_be_visible()
    expect(page.locator("#audit")).to_contain_text("Consistent")
    shoot(page, folder / "console-user.png")

    for name in ("console-ledger.png", "console-user.png"):
        width, height = png_size(folder / name)
        assert width == 1280 and 600 <= height <= HEIGHT, (name, width, height)
