"""Support answering "where did my credits go?": sign in, find a user, read
their balances, holds, grants, allowances, chart, timeline, audit and
explanation, in a real browser on the real served ledger."""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import PHONE, history_of, open_user, sign_in
from tests.e2e.conftest import Api
from tests.helpers import API_KEYS

MARKUP = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def api(shared_api: Api) -> Api:
    return shared_api


def points_of(page: Page, chart_id: str) -> int:
    points = page.locator(f"#{chart_id} polyline").get_attribute("points")
    assert points is not None
    return len(points.split())


def test_signing_in_keeps_the_key_in_session_storage_and_out_of_the_url(
    api: Api, page: Page
) -> None:
    sign_in(page, api.url)

    expect(page.get_by_role("heading", name="Ledger", exact=True)).to_be_visible()
    assert API_KEYS["admin"] not in page.url
    stored = page.evaluate("() => Object.values(sessionStorage)")
    assert stored == [API_KEYS["admin"]]
    page.reload()  # the tab keeps its session
    expect(page.get_by_text("Signed in: admin key")).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("() => sessionStorage.length") == 0


def test_an_unknown_key_is_refused_and_kept_nowhere(api: Api, page: Page) -> None:
    page.goto(f"{api.url}/console")
    page.get_by_label("API key").fill("not-a-key")
    page.get_by_label("API key").press("Enter")

    expect(page.get_by_role("alert")).to_have_text(re.compile("The key was refused"))
    assert page.evaluate("() => sessionStorage.length") == 0
    expect(page.get_by_text("Signed in:")).to_be_hidden()


def test_a_user_page_shows_balances_holds_grants_allowances_audit_and_explanation(
    api: Api, page: Page
) -> None:
    user_id = api.registered("support")
    api.check_command(
        api.post(
            f"/v1/users/{user_id}/credits/grants",
            {"amount": 50, "reason": "December promotion", "expires_at": "2099-12-31T23:59:59Z"},
        )
    )
    api.json(
        api.post(
            f"/v1/users/{user_id}/credits/holds",
            {"amount": 5, "reason": "chat reply", "ttl_seconds": 3600},
        ),
        201,
    )
    api.json(
        api.put(f"/v1/users/{user_id}/allowances/chat-messages", {"amount": 30, "period": "week"})
    )
    api.current(user_id)

    sign_in(page, api.url, "reader")
    open_user(page, user_id)

    balances = page.locator("#balances")
    expect(
        balances.get_by_role("row", name=re.compile(r"^Credits 55 5 \d+ at 2099-12-31"))
    ).to_be_visible()
    holds = page.locator("#holds")
    expect(holds.get_by_role("cell", name="chat reply")).to_be_visible()
    grants = page.locator("#grants")
    expect(grants.get_by_role("row", name=re.compile("December promotion"))).to_contain_text(
        "2099-12-31"
    )
    registration = grants.locator("tbody tr", has_text="registration")
    expect(registration).to_have_count(2)  # one of each balance
    expect(registration.filter(has_text="Credits")).to_contain_text("never")
    expect(
        page.locator("#allowances").get_by_role("row", name=re.compile("Chat messages 30 week"))
    ).to_be_visible()
    expect(page.locator("#audit")).to_contain_text("Consistent")
    explanation = page.locator("#explanation")
    expect(explanation).to_contain_text("55 credits available; 5 held by 1 open hold")
    expect(explanation.locator("li", has_text="5 credits held (chat reply)")).to_have_count(1)
    timeline = page.locator("#timeline")
    expect(timeline.get_by_role("row", name=re.compile("HoldPlaced"))).to_contain_text("chat reply")
    expect(timeline.get_by_role("row", name=re.compile("CreditsGranted"))).to_contain_text(
        "admin key_"
    )
    expect(timeline.get_by_role("row", name=re.compile("CreditsGranted"))).to_contain_text("req_")


def test_the_chart_has_one_point_per_event(api: Api, page: Page) -> None:
    user_id = api.registered("charted")
    history_of(api, user_id, 39)
    api.current(user_id)

    sign_in(page, api.url)
    open_user(page, user_id)

    for balance in ("free_credits", "free_chat_messages"):
        chart = page.locator(f"#chart-{balance}")
        expect(chart).to_have_attribute("data-events", "40")
        assert points_of(page, f"chart-{balance}") == 40
        expect(chart.locator("figcaption")).to_contain_text("40 events, one point per event")


def test_a_long_history_is_drawn_downsampled_with_its_extremes(api: Api, page: Page) -> None:
    user_id = api.registered("long")
    with ThreadPoolExecutor(4) as pool:  # the order of grants and spends does not matter here
        list(pool.map(lambda _: history_of(api, user_id, 300), range(4)))
    user = api.current(user_id)
    assert user["version"] == 1201
    events = api.json(api.get(f"/v1/users/{user_id}/events", params={"limit": 1000}))["items"]
    events += api.json(
        api.get(f"/v1/users/{user_id}/events", params={"after_version": 1000, "limit": 1000})
    )["items"]
    highest = max(event["user"]["free_credits"] for event in events)

    sign_in(page, api.url)
    open_user(page, user_id)

    chart = page.locator("#chart-free_credits")
    expect(chart).to_have_attribute("data-events", "1201")
    shown = int(chart.get_attribute("data-points") or 0)
    assert 100 < shown <= 500
    assert points_of(page, "chart-free_credits") == shown
    expect(chart.locator("figcaption")).to_contain_text(f"1,201 events, {shown} points shown")
    expect(chart.locator("figcaption")).to_contain_text(f"highest {highest:,}")
    expect(chart.locator(".y-labels span").first).to_have_text(f"{highest:,}")


def test_the_timeline_pages_through_the_history_by_keyboard(api: Api, page: Page) -> None:
    user_id = api.registered("paged")
    history_of(api, user_id, 59)
    api.current(user_id)

    sign_in(page, api.url)
    open_user(page, user_id)
    timeline = page.locator("#timeline")
    versions = timeline.locator("tbody tr td:first-child")

    expect(timeline.get_by_text("Page 1 of 3: versions 36\u201360")).to_be_visible()
    expect(versions).to_have_count(25)
    expect(versions.first).to_have_text("60")
    older = timeline.get_by_role("button", name="Older")
    older.focus()
    page.keyboard.press("Enter")
    expect(timeline.get_by_text("Page 2 of 3: versions 11\u201335")).to_be_visible()
    expect(versions.first).to_have_text("35")
    page.keyboard.press("Enter")
    expect(timeline.get_by_text("Page 3 of 3: versions 1\u201310")).to_be_visible()
    expect(versions).to_have_count(10)
    expect(versions.last).to_have_text("1")
    expect(timeline.locator("tbody tr").last).to_contain_text("UserRegistered")
    expect(older).to_be_disabled()
    timeline.get_by_role("button", name="Newer").click()
    expect(versions.first).to_have_text("35")


def test_a_reason_written_as_markup_is_shown_as_those_characters(
    api: Api, open_page: Callable[..., Page]
) -> None:
    user_id = api.registered("hostile")
    api.check_command(
        api.post(f"/v1/users/{user_id}/credits/grants", {"amount": 3, "reason": MARKUP})
    )
    api.check_command(
        api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 1, "reason": MARKUP})
    )
    api.current(user_id)
    page = open_page()  # fails the test at its end if any dialog opened

    sign_in(page, api.url)
    open_user(page, user_id)

    timeline = page.locator("#timeline")
    expect(timeline.get_by_role("cell", name=MARKUP, exact=True)).to_have_count(2)
    expect(page.locator("#grants").get_by_role("cell", name=MARKUP, exact=True)).to_have_count(1)
    expect(page.locator("#explanation")).to_contain_text(MARKUP)
    assert page.locator("main img").count() == 0
    page.wait_for_timeout(500)  # an onerror would have fired by now


def test_keyboard_alone_reaches_the_user_box_with_a_visible_focus(api: Api, page: Page) -> None:
    user_id = api.registered("keyboard")
    sign_in(page, api.url)

    box = page.get_by_label("User id")
    for _ in range(10):
        page.keyboard.press("Tab")
        if box.evaluate("element => element === document.activeElement"):
            break
    else:
        raise AssertionError("Tab never reached the user id box")
    outline = box.evaluate("element => getComputedStyle(element).outlineStyle")
    assert outline not in ("none", ""), outline
    page.keyboard.type(user_id)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"User {user_id}")
    assert page.url.endswith(f"/console#/users/{user_id}")


def test_a_user_page_fits_a_phone_without_scrolling_sideways(
    api: Api, open_page: Callable[..., Page]
) -> None:
    user_id = api.registered("phone")
    history_of(api, user_id, 30, reason="a reason long enough to need wrapping on a phone screen")
    api.current(user_id)
    page = open_page(PHONE)

    sign_in(page, api.url)
    open_user(page, user_id)
    expect(page.locator("#timeline tbody tr")).to_have_count(25)
    expect(page.locator("#chart-free_credits")).to_be_visible()

    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width}px wide"


def test_an_unknown_user_is_said_to_be_unknown(api: Api, page: Page) -> None:
    sign_in(page, api.url)
    open_user(page, "nobody-here")

    expect(page.get_by_role("alert")).to_contain_text("no user with id 'nobody-here'")
