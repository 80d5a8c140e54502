"""GET /ui: the inspector page is served from the package, self-contained, and can be off."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from app.config import Settings
from tests.support import data
from tests.support.auth import ADMIN
from tests.support.client import app_client

ASSETS = {"inspector.js": "text/javascript", "inspector.css": "text/css"}


async def test_page_and_assets_come_from_the_service_itself(client: httpx.AsyncClient) -> None:
    page = await client.get("/ui")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    referenced = set(re.findall(r'(?:src|href)="([^"]+)"', page.text))
    assert referenced == {f"ui/{name}" for name in ASSETS} | {"data:,"}
    for name, media_type in ASSETS.items():
        asset = await client.get(f"/ui/{name}")
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith(media_type)
        # no CDN, no other host: everything the page loads or calls is relative
        assert not re.search(r"https?://|[\"'(]//", asset.text), name
    assert (await client.get("/ui/secrets.txt")).status_code == 404
    assert (await client.get("/ui/..%2Fmain.py")).status_code == 404


async def test_a_setting_turns_the_page_off(loaded: Settings) -> None:
    async with app_client(loaded.model_copy(update={"ui": False})) as client:
        assert (await client.get("/ui")).status_code == 404
        assert (await client.get("/ui/inspector.js")).status_code == 404
        assert (await client.get("/healthz")).status_code == 200


async def test_user_history_carries_catalogue_titles_and_categories(
        client: httpx.AsyncClient, synth_dir: Path) -> None:
    categories = data.item_categories(synth_dir)
    user = sorted(data.histories(synth_dir))[0]
    body = (await client.get(f"/users/{user}", headers=ADMIN)).json()
    assert body["history"]
    for entry in body["history"]:
        assert entry["title"]
        assert entry["category"] == categories[entry["item_id"]]
