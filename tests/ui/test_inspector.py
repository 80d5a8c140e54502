"""The inspector page end to end: a real `socialrec serve` process, real Redis, real Chromium."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from app.config import Settings
from tests.support import data
from tests.support.auth import ADMIN_TOKEN
from tests.support.browser import chromium
from tests.support.serve import ServeProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def server(loaded: Settings, tmp_path: Path) -> Iterator[ServeProcess]:
    """The service under uvicorn in a child process, on this test's Redis key prefix."""
    process = ServeProcess({"SOCIALREC_REDIS_URL": loaded.redis_url,
                            "SOCIALREC_KEY_PREFIX": loaded.key_prefix,
                            "SOCIALREC_ARTIFACTS": str(loaded.artifacts)},
                           tmp_path / "serve.log").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def page(server: ServeProcess) -> Iterator[Page]:
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield page
        assert not errors, errors


def social_user(server: ServeProcess, synth_dir: Path) -> tuple[str, str]:
    """A synthetic user whose list names a friend, and the top item (one a friend engaged
    with), found through the public API."""
    for user in sorted(data.friends(synth_dir)):
        body = httpx.get(f"{server.url}/recommend/{user}",
                         params={"k": 10, "explain": "true"}).json()
        for item in body["items"][:3]:
            if any(r["kind"] == "friends_engaged" for r in item["reasons"]):
                return user, body["items"][0]["item_id"]
    raise AssertionError("no synthetic user has a friend-engaged recommendation")


def shown_items(page: Page, column: str) -> list[str]:
    return page.locator(f"{column} li.item").evaluate_all("rows => rows.map(r => r.dataset.item)")


def test_look_up_a_user_see_friends_post_a_purchase_and_the_list_moves(
        server: ServeProcess, page: Page, synth_dir: Path) -> None:
    user, top = social_user(server, synth_dir)
    friends = set(data.friends(synth_dir)[user])

    page.goto(server.url + "/ui")
    expect(page.locator("#service")).to_contain_text("ready · model ")
    page.fill("#user", user)
    page.click("#open-form button")
    expect(page.locator("body")).to_have_attribute("data-state", "ready")
    assert page.url.endswith(f"/ui?user={user}")  # a link an analyst can share

    # Reasons name real friends; the same friends are marked in the friends panel.
    named = page.locator("#recs-social .chip.friends a.user").all_inner_texts()
    assert named and set(named) <= friends
    expect(page.locator(f"#friends li.named[data-user='{named[0]}']")).to_be_visible()
    # The comparison list is the pipeline without its social stages: no friend is named there.
    expect(page.locator("#recs-own li.item")).to_have_count(10)
    expect(page.locator("#recs-own .chip.friends")).to_have_count(0)
    # History shows titles and categories from the catalogue, not only ids.
    expect(page.locator("#history tbody tr").first).to_contain_text(re.compile(r"\w+ \w+"))
    before = shown_items(page, "#recs-social")
    assert before[0] == top

    # Click the top item to pick it, buy it, and watch the list move.
    page.locator("#recs-social li.item").first.click()
    expect(page.locator("#event-target")).to_have_value(top)
    page.select_option("#event-type", "purchase")
    page.click("#event-form button")
    expect(page.locator("#event-result")).to_have_text(f"purchase {top}: accepted 1")
    expect(page.locator(f"#history tbody tr[data-item='{top}']")).to_be_visible()
    after = shown_items(page, "#recs-social")
    assert top not in after and after != before
    expect(page.locator("#recs-social .badge.new")).not_to_have_count(0)

    # The shared link opens the user directly, with the purchase in their history.
    page.goto(f"{server.url}/ui?user={user}")
    expect(page.locator("body")).to_have_attribute("data-state", "ready")
    expect(page.locator("#history tbody tr").first).to_have_attribute("data-item", top)
    assert shown_items(page, "#recs-social") == after


def test_with_an_admin_token_the_page_asks_for_it_and_counts_friends_without_ids(
        loaded: Settings, tmp_path: Path, synth_dir: Path) -> None:
    """A shop that guards user data (SOCIALREC_ADMIN_TOKEN) and hides friend ids in reasons:
    the page shows the lists at once, the history and friends once the token is typed in, and
    the friends who engaged as a number."""
    process = ServeProcess({"SOCIALREC_REDIS_URL": loaded.redis_url,
                            "SOCIALREC_KEY_PREFIX": loaded.key_prefix,
                            "SOCIALREC_ARTIFACTS": str(loaded.artifacts),
                            "SOCIALREC_ADMIN_TOKEN": ADMIN_TOKEN,
                            "SOCIALREC_REASON_FRIEND_IDS": "false"},
                           tmp_path / "serve.log").start()
    try:
        user, _ = social_user(process, synth_dir)
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(f"{process.url}/ui?user={user}")
            expect(page.locator("body")).to_have_attribute("data-state", "ready")
            expect(page.locator("#history-note")).to_have_text(
                "history and friends need the admin token")
            chips = page.locator("#recs-social .chip.friends")
            expect(chips.first).to_have_text(re.compile(r"^friends engaged: \d+$"))
            expect(page.locator("#recs-social .chip.friends a.user")).to_have_count(0)

            page.fill("#token", ADMIN_TOKEN)
            page.locator("#token").dispatch_event("change")
            page.click("#open-form button")
            expect(page.locator("#history tbody tr").first).to_be_visible()
            expect(page.locator("#history-note")).to_be_hidden()
            expect(page.locator("#friends li").first).to_be_visible()
    finally:
        process.stop()
