"""An app with its lifespan running, and an HTTP client that talks to it in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from asgi_lifespan import LifespanManager
from starlette.types import ASGIApp, Message

from app.config import Settings
from app.main import create_app


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[tuple[ASGIApp, httpx.AsyncClient]]:
    """The app (for raw ASGI calls) and a client of it."""
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield manager.app, client


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(settings) as (_, client):
        yield client


async def get_then_leave(app: ASGIApp, path: str, leave: asyncio.Event) -> int:
    """GET `path` from a client that goes away once `leave` is set, as uvicorn tells an app:
    from then on every read of the request gives `http.disconnect`. The status the app sent
    (0: none)."""
    status = 0
    sent_request = False

    async def receive() -> Message:
        nonlocal sent_request
        if not leave.is_set() and not sent_request:
            sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "headers": [(b"host", b"test")],
             "client": ("127.0.0.1", 50000), "server": ("test", 80)}
    await app(scope, receive, send)
    return status
