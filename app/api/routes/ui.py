"""GET /ui: the inspector page — plain HTML, CSS and JS shipped in the package, no CDN and no
build step. The page calls only the public API (and sends the admin token when given one)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter, HTTPException, Response, status

router = APIRouter(tags=["ui"], include_in_schema=False)

ASSETS = {"inspector.js": "text/javascript; charset=utf-8",
          "inspector.css": "text/css; charset=utf-8"}
# Everything from this origin, nothing inline, no frames: item titles come from the catalogue
# and are only ever inserted as text, but the policy holds even if that slips.
HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                      "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
           "X-Content-Type-Options": "nosniff",
           "Cache-Control": "no-cache"}


@cache
def _read(name: str) -> bytes:
    return (files("app.ui") / "static" / name).read_bytes()


@router.get("/ui")
async def page() -> Response:
    return Response(_read("index.html"), media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/ui/{asset}")
async def asset(asset: str) -> Response:
    media_type = ASSETS.get(asset)
    if media_type is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
    return Response(_read(asset), media_type=media_type, headers=HEADERS)
