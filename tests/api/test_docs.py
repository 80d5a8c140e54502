"""/docs works without internet: the page loads its scripts, styles and icon from the service
itself, never from a CDN."""

from __future__ import annotations

import re

import httpx

# Every URL the page may load: attributes, and Swagger UI's `url:` option.
LOADED = re.compile(r"""(?:\b(?:src|href|spec-url)\s*=\s*|\burl:\s*)["']([^"']+)["']""")


async def test_the_api_docs_load_everything_from_the_service(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    html = response.text
    assert not re.search(r"(?:https?:)?//[\w.-]+\.\w", html), "the page names another host"
    urls = LOADED.findall(html)
    assert any(u.endswith(".js") for u in urls) and "/openapi.json" in urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    kinds = {(await client.get(u)).headers["content-type"].split(";")[0] for u in urls}
    assert {"text/javascript", "application/json"} <= kinds
