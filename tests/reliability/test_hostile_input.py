"""Hostile input: oversized bodies are refused with 413 before they are read (with or without a
Content-Length), malformed fields get a 422 naming the field, control characters sent by a
client never reach a log line raw, and no response ever carries a stack trace."""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import redis
from asgi_lifespan import LifespanManager

from app.config import Settings
from app.main import create_app
from app.tools.local_redis import LocalRedis, free_port
from tests.support.auth import ADMIN, ADMIN_TOKEN
from tests.support.client import app_client
from tests.support.serve import ServeProcess

GOOD = {"user_id": "u", "type": "view", "item_id": "p1"}
LIMIT = Settings().max_body_bytes
ANSI = "\x1b[31mRED\x1b[0m"
FORGED = "ok\n2030-01-01 00:00:00 CRITICAL app.main forged-line"
# What must never appear in a log line: a raw escape, or the forged line starting on its own.
CONTROL = ("\x1b", "\n2030-01-01")


@pytest.fixture(scope="module")
async def api(redis_url: str, artifacts_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    """One started app for the many validation cases (they need a model, not loaded users)."""
    prefix = f"srtest-{uuid.uuid4().hex[:10]}"
    settings = Settings(redis_url=redis_url, key_prefix=prefix, artifacts=artifacts_dir,
                        admin_token=ADMIN_TOKEN)
    async with app_client(settings) as client:
        yield client
    store = redis.Redis.from_url(redis_url)
    for key in store.scan_iter(match=f"{prefix}:*", count=1000):
        store.delete(key)
    store.close()


async def post_events(client: httpx.AsyncClient, events: list[dict]) -> httpx.Response:
    return await client.post("/events", json={"events": events})


def fields_named(response: httpx.Response) -> set[str]:
    return {str(part) for err in response.json()["detail"] for part in err["loc"]}


# --- 413 -------------------------------------------------------------------------------------

async def test_declared_oversized_body_is_413_without_parsing(api: httpx.AsyncClient) -> None:
    body = b"\xff not json at all " * (LIMIT // 10)
    response = await api.post("/events", content=body,
                                 headers={"content-type": "application/json"})
    assert response.status_code == 413, "not 400/422: the body was never parsed"
    assert response.json()["detail"].startswith("request body larger than")


async def test_chunked_oversized_body_is_413_and_the_rest_is_never_read(
        api: httpx.AsyncClient) -> None:
    chunk, pulled = 4096, 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        yield b'{"events": ['
        while True:  # no Content-Length: sent as Transfer-Encoding: chunked
            pulled += 1
            yield b" " * chunk

    response = await api.post("/events", content=endless(),
                                 headers={"content-type": "application/json"})
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert pulled * chunk <= LIMIT + 2 * chunk, "read on past the limit"


# --- 422 naming the field --------------------------------------------------------------------

LONG = "x" * 129
BAD_IDS = [LONG, "has space", "slash/y", "caf\u00e9", "line\nbreak", "trailing\n", ANSI, "",
           "semi;colon", "tab\t"]


@pytest.mark.parametrize("field", ["event_id", "user_id", "item_id", "friend_id"])
@pytest.mark.parametrize("bad", BAD_IDS, ids=lambda v: repr(v)[:12])
async def test_malformed_ids_are_422_naming_the_field(api: httpx.AsyncClient, field: str,
                                                      bad: str) -> None:
    kind = "follow" if field == "friend_id" else "view"
    event = {"user_id": "u", "type": kind, "item_id": "p1", "friend_id": "f", field: bad}
    if kind == "follow":
        event.pop("item_id")
    response = await post_events(api, [GOOD, event])
    assert response.status_code == 422
    assert field in fields_named(response)
    assert ["body", "events", 1, field] in [e["loc"] for e in response.json()["detail"]]


@pytest.mark.parametrize("field", ["value", "timestamp"])
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e309", "-1"])
async def test_non_finite_numbers_are_422_naming_the_field(api: httpx.AsyncClient, field: str,
                                                           literal: str) -> None:
    body = json.dumps({"events": [{**GOOD, field: 0}]}).replace(f'"{field}": 0',
                                                                f'"{field}": {literal}')
    response = await api.post("/events", content=body,
                              headers={"content-type": "application/json"})
    assert response.status_code == 422, literal
    assert field in fields_named(response)


@pytest.mark.parametrize("kind", ["teleport", "VIEW", "", "view\n", ANSI, "a" * 33])
async def test_unknown_or_malformed_types_are_422_naming_the_field(api: httpx.AsyncClient,
                                                                   kind: str) -> None:
    response = await post_events(api, [GOOD, {**GOOD, "type": kind}])
    assert response.status_code == 422
    assert "type" in fields_named(response)


async def test_more_than_1000_events_is_422_naming_the_list(api: httpx.AsyncClient) -> None:
    response = await post_events(api, [GOOD] * 1001)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "events"]
    assert (await post_events(api, [GOOD] * 1000)).status_code == 202


@pytest.mark.parametrize(("path", "field"), [
    ("/recommend/" + LONG, "user_id"), ("/recommend/a%0Ab", "user_id"),
    ("/recommend/u1%0A", "user_id"), ("/recommend/%1B%5B31m", "user_id"),
    ("/users/" + LONG, "user_id"), ("/users/a%20b", "user_id"), ("/users/u1%0A", "user_id"),
    ("/recommend/u1?k=NaN", "k"), ("/recommend/u1?k=1e3", "k"), ("/recommend/u1?k=-1", "k"),
    ("/recommend/u1?exclude=" + LONG, "exclude"), ("/recommend/u1?exclude=a%0A", "exclude"),
    ("/recommend/u1?explain=maybe", "explain"),
])
async def test_malformed_path_and_query_are_422_naming_the_field(api: httpx.AsyncClient,
                                                                 path: str, field: str) -> None:
    # /users needs the admin token first: a caller without it learns nothing, not even 422s.
    response = await api.get(path, headers=ADMIN)
    assert response.status_code == 422
    assert field in fields_named(response)


# --- logs and stack traces -------------------------------------------------------------------

def hostile_requests() -> Iterator[tuple[str, str, dict]]:
    """(method, url, httpx kwargs) carrying ANSI escapes and forged log lines everywhere a
    client can put text."""
    for payload in (ANSI, FORGED):
        quoted = quote(payload, safe="")
        yield "GET", f"/recommend/{quoted}", {}
        yield "GET", f"/users/{quoted}", {}
        yield "GET", f"/recommend/u1?k={quoted}&exclude={quoted}&category={quoted}", {}
        yield "GET", f"/no-such-route/{quoted}", {}
        for field in ("event_id", "user_id", "type", "item_id", "friend_id", "value"):
            yield "POST", "/events", {"json": {"events": [{**GOOD, field: payload}]}}
        yield "POST", "/events", {"json": {"events": [{**GOOD, payload: 1}]}}
        yield "POST", "/events", {"json": {payload: []}}
        yield "POST", "/events", {"content": payload.encode() + b"\xff",
                                  "headers": {"content-type": "application/json"}}
        yield "POST", "/admin/reload", {"headers": {"authorization": "Bearer " + ANSI}}


def assert_clean(records: list[logging.LogRecord], bodies: list[str]) -> None:
    for record in records:
        if record.name.startswith(("httpx", "httpcore")):
            continue  # the test's own HTTP client
        text = record.getMessage() + (record.exc_text or "")
        assert not any(c in text for c in CONTROL), f"raw client text in a log line: {text!r}"
    for body in bodies:
        assert "Traceback" not in body and 'File "' not in body, body
        assert "\x1b" not in body, "a raw escape went back to the client"


async def test_client_text_never_reaches_a_log_line_raw(loaded: Settings,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """With Redis up, and with Redis down, when the service logs warnings about requests."""
    caplog.set_level(logging.DEBUG)
    bodies = []
    for settings in (loaded, loaded.model_copy(update={
            "redis_url": f"redis://127.0.0.1:{free_port()}/0"})):
        app = create_app(settings)
        async with LifespanManager(app) as manager, httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as client:
            for method, url, kwargs in hostile_requests():
                response = await client.request(method, url, **kwargs)
                assert response.status_code < 500 or response.status_code == 503, (url, kwargs)
                bodies.append(response.text)
            good = await post_events(client, [GOOD])
            assert good.status_code in (202, 503)
    assert any(r.name.startswith("app.") and r.levelno >= logging.WARNING
               for r in caplog.records), "nothing was logged: the test would prove nothing"
    assert_clean(caplog.records, bodies)


async def test_an_unexpected_error_is_a_500_without_a_stack_trace(
        loaded: Settings, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from app.serving import online

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError('internal detail: File "/srv/app.py", line 1')

    monkeypatch.setattr(online, "recommend", broken)
    app = create_app(loaded)
    async with LifespanManager(app) as manager, httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app, raise_app_exceptions=False),
            base_url="http://t") as client:
        response = await client.get("/recommend/u0001")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}
    assert "internal detail" not in response.text
    assert any("unhandled error on /recommend/{user_id}" in r.getMessage()
               for r in caplog.records), "the error is logged for operators"


@pytest.mark.slow
def test_a_real_server_refuses_a_chunked_oversized_body_and_logs_no_client_text(
        own_redis: LocalRedis, serve: Callable[..., ServeProcess]) -> None:
    """Through uvicorn's HTTP parsing, not just the in-process transport."""
    server = serve(own_redis.url).start()
    def body() -> Iterator[bytes]:
        yield b'{"events": ['
        for _ in range(math.ceil(2 * LIMIT / 65536)):
            yield b" " * 65536
        yield b"]}"

    with httpx.Client(base_url=server.url, timeout=10) as client:
        response = client.post("/events", content=body(),
                               headers={"content-type": "application/json"})
        assert response.request.headers.get("transfer-encoding") == "chunked"
        assert response.status_code == 413, response.text
        bodies = [response.text]
        for method, url, kwargs in hostile_requests():
            if "authorization" in kwargs.get("headers", {}):
                continue  # an escape in a header is refused by the HTTP client itself
            bodies.append(client.request(method, url, **kwargs).text)
        assert client.get("/readyz").status_code == 200
    server.stop()
    log = server.log_path.read_text(errors="replace")
    assert "Application startup complete" in log
    assert not any(c in log for c in CONTROL), "raw client text in the server log"
    assert_clean([], bodies)
