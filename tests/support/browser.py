"""Headless Chromium for end-to-end tests: Debian's `chromium` driven by Playwright — never a
browser download. Tests skip (with the reason) only when no Chromium is installed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = Path(os.environ.get("SOCIALREC_TEST_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]


@contextmanager
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install chromium` "
                    "(or set SOCIALREC_TEST_CHROMIUM) to run the browser tests")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def images_loaded(browser: Browser, page_file: Path) -> tuple[list[bool], list[str]]:
    """Open a local HTML file with the network off: whether each <img> decoded, and every URL
    the page asked for."""
    context = browser.new_context(offline=True)
    try:
        page = context.new_page()
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(page_file.resolve().as_uri())
        loaded: list[bool] = page.eval_on_selector_all(
            "img", "images => images.map(i => i.complete && i.naturalWidth > 0)")
        return loaded, requested
    finally:
        context.close()
