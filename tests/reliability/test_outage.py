"""Redis outage under traffic: the service keeps answering from memory, within the configured
timeout, reports not-ready, refuses events with 503 (never 202), and recovers by itself when
Redis is back — no restart, no burst of failures from dead pooled connections."""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.offline.load import load_into_redis
from app.tools.local_redis import LocalRedis
from tests.support.client import app_client

pytestmark = pytest.mark.slow

REQUEST_BOUND_S = 1.0  # Settings.redis_timeout_s is 0.25 s; one request may wait a few of them
RECOVERY_BOUND_S = 5.0
K = 5


@dataclass(frozen=True)
class Call:
    kind: str  # recommend | readyz | events
    started: float
    ended: float
    status: int
    degraded: bool | None = None
    items: int | None = None

    @property
    def elapsed(self) -> float:
        return self.ended - self.started


async def one_call(client: httpx.AsyncClient, kind: str, n: int) -> Call:
    started = time.monotonic()
    if kind == "recommend":
        response = await client.get(f"/recommend/u{n % 300:04d}", params={"k": K})
    elif kind == "readyz":
        response = await client.get("/readyz")
    else:
        response = await client.post("/events", json={"events": [
            {"event_id": f"out-{n}", "user_id": f"u{n % 300:04d}", "type": "view",
             "item_id": "p00001"}]})
    ended = time.monotonic()
    body = response.json()
    return Call(kind, started, ended, response.status_code, body.get("degraded"),
                len(body["items"]) if "items" in body else None)


async def traffic(client: httpx.AsyncClient, kind: str, stop: asyncio.Event,
                  calls: list[Call], offset: int) -> None:
    n = offset
    while not stop.is_set():
        n += 1
        calls.append(await one_call(client, kind, n))
        await asyncio.sleep(0.005)


async def wait_recovered(client: httpx.AsyncClient, user: str) -> float:
    """Seconds until /readyz is 200 and a known user is served undegraded."""
    start = time.monotonic()
    while time.monotonic() - start < RECOVERY_BOUND_S + 1:
        ready = await client.get("/readyz")
        body = (await client.get(f"/recommend/{user}", params={"k": K})).json()
        if ready.status_code == 200 and body["degraded"] is False:
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    return float("inf")


def check_every_call(calls: list[Call]) -> None:
    slow = [c for c in calls if c.elapsed > REQUEST_BOUND_S]
    assert not slow, f"requests over {REQUEST_BOUND_S}s: {slow[:5]}"
    for c in calls:
        if c.kind == "recommend":
            assert c.status == 200 and c.items == K, c
        elif c.kind == "readyz":
            assert c.status in (200, 503), c
        else:
            assert c.status in (202, 503), c


def within(calls: list[Call], start: float, end: float) -> dict[str, list[Call]]:
    out: dict[str, list[Call]] = {"recommend": [], "readyz": [], "events": []}
    for c in calls:
        if c.started >= start and c.ended <= end:
            out[c.kind].append(c)
    return out


async def outage_under_traffic(settings: Settings, redis: LocalRedis, fail, heal) -> None:
    """Traffic on three routes while `fail()` breaks Redis and `heal()` brings it back."""
    async with app_client(settings) as client:
        assert (await client.get("/readyz")).status_code == 200
        stop, calls = asyncio.Event(), []
        workers = [asyncio.create_task(traffic(client, kind, stop, calls, n * 100_000))
                   for n, kind in enumerate(("recommend", "recommend", "readyz", "events"))]
        try:
            await asyncio.sleep(0.4)
            await asyncio.to_thread(fail)
            down_from = time.monotonic()
            await asyncio.sleep(1.5)
            down_until = time.monotonic()
            await asyncio.to_thread(heal)
            recovered_in = await wait_recovered(client, "u0001")
            healed_at = time.monotonic()
            await asyncio.sleep(0.5)
        finally:
            stop.set()
            await asyncio.gather(*workers)

        check_every_call(calls)
        down = within(calls, down_from, down_until)
        assert len(down["recommend"]) >= 3 and len(down["readyz"]) >= 2
        assert len(down["events"]) >= 2
        assert all(c.degraded is True for c in down["recommend"])
        assert all(c.status == 503 for c in down["readyz"] + down["events"])
        assert recovered_in < RECOVERY_BOUND_S, "did not recover by itself"
        after = within(calls, healed_at, time.monotonic())
        assert after["recommend"] and after["events"] and after["readyz"]
        assert all(c.degraded is False for c in after["recommend"])
        assert all(c.status in (200, 202) for c in after["readyz"] + after["events"])


@pytest.fixture
def loaded_own(own_settings: Settings, synth_dir: Path) -> Settings:
    load_into_redis(own_settings.artifacts, synth_dir, settings=own_settings, progress=False)
    return own_settings


async def test_redis_stopped_and_restarted_on_the_same_port(loaded_own: Settings,
                                                            own_redis: LocalRedis) -> None:
    await outage_under_traffic(loaded_own, own_redis, own_redis.stop, own_redis.start)


async def test_redis_hung_answers_within_the_timeout(loaded_own: Settings,
                                                     own_redis: LocalRedis) -> None:
    """A Redis that accepts connections but never answers (SIGSTOP: a stuck server or a
    network partition) costs each request one socket timeout, not a hang."""
    assert own_redis.process is not None
    process = own_redis.process
    await outage_under_traffic(loaded_own, own_redis,
                               lambda: process.send_signal(signal.SIGSTOP),
                               lambda: process.send_signal(signal.SIGCONT))


async def test_a_restart_between_requests_costs_no_failed_request(loaded_own: Settings,
                                                                  own_redis: LocalRedis) -> None:
    """Redis restarted while the service is idle: every pooled connection is dead, and the
    next burst of requests still gets fresh state and 202s (one reconnect, no 503)."""
    async with app_client(loaded_own) as client:
        async def burst(tag: str) -> None:
            recs = await asyncio.gather(*(client.get(f"/recommend/u{n:04d}", params={"k": K})
                                          for n in range(1, 13)))
            events = await asyncio.gather(*(client.post("/events", json={"events": [
                {"event_id": f"{tag}-{n}", "user_id": "u0001", "type": "view",
                 "item_id": "p00001"}]}) for n in range(12)))
            assert [r.json()["degraded"] for r in recs] == [False] * 12, tag
            assert [r.status_code for r in events] == [202] * 12, tag

        await burst("before")
        await asyncio.to_thread(own_redis.stop)
        await asyncio.to_thread(own_redis.start)
        await burst("after")
