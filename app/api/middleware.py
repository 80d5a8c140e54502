"""Pure ASGI middleware: request metrics by route template, and a body size limit."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics import Metrics

UNMATCHED = "<unmatched>"


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", UNMATCHED)
            method = scope["method"]
            metrics = self.metrics
            metrics.child(metrics.latency, method, template).observe(time.perf_counter() - start)
            metrics.child(metrics.requests, method, template, str(status)).inc()


class BodyLimitMiddleware:
    """413 before the body is parsed: by Content-Length when given, else while streaming.

    A streamed (chunked) body is cut off at the limit: the app's read fails there, and whatever
    the app makes of that failure (FastAPI turns any read error into a 400) is replaced by the
    413. The rest of the body is never read."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _too_large(send, self.max_bytes)
            return
        received = 0
        too_large = False
        started = False

        async def limited() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                too_large = True
                raise BodyTooLarge
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if too_large and not started:
                return  # the app's answer to the cut-off body; the 413 goes out instead
            started = True
            await send(message)

        try:
            await self.app(scope, limited, guarded)
        except Exception:
            if not too_large:
                raise  # a real error: the app's own handlers decide
        if too_large and not started:
            await _too_large(send, self.max_bytes)


class BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = f'{{"detail":"request body larger than {limit} bytes"}}'.encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
