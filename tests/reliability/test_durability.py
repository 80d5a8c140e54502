"""No acknowledged event is lost, none is applied twice: clients post batches with unique event
ids to a real `socialrec serve` process while the service is SIGKILLed, or Redis (AOF with
appendfsync always, as in docker-compose.yml) is stopped with SIGTERM or SIGKILL, and restarted.
A client retries a batch that got a 503 or a connection error with the same event ids (what the
API asks of clients); at the end every acknowledged id is in the event log exactly once, counted
once in popularity and applied once to its user's history."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
import redis

from app.config import Settings
from app.store.keys import Keys
from app.tools.local_redis import LocalRedis
from tests.reliability.conftest import PREFIX
from tests.support.log import live_counts, log_fields
from tests.support.serve import ServeProcess

pytestmark = pytest.mark.slow

BATCH = 4
PRODUCERS = 2
USERS = 97
OUTAGES = 2
RUN_S = 0.8  # traffic between outages
BATCH_DEADLINE_S = 20.0


class Producer:
    def __init__(self, name: str, url: str) -> None:
        self.name, self.url = name, url
        self.acked: list[str] = []
        self.retries = 0
        self.seen_duplicates = 0

    def batch(self, n: int) -> list[dict]:
        return [{"event_id": f"{self.name}-{n}-{j}", "user_id": f"d{(n * BATCH + j) % USERS}",
                 "type": "view", "item_id": f"it-{self.name}-{n}-{j}"} for j in range(BATCH)]

    async def post_until_acked(self, client: httpx.AsyncClient, batch: list[dict]) -> None:
        deadline = time.monotonic() + BATCH_DEADLINE_S
        while True:
            try:
                response = await client.post(self.url + "/events", json={"events": batch})
            except httpx.TransportError:  # the server died under the request, or is down
                response = None
            if response is not None and response.status_code == 202:
                body = response.json()
                assert body["accepted"] + body["duplicates"] == len(batch), body
                self.seen_duplicates += body["duplicates"]
                self.acked.extend(e["event_id"] for e in batch)
                return
            assert response is None or response.status_code == 503, response.text
            assert time.monotonic() < deadline, "a batch was never accepted"
            self.retries += 1
            await asyncio.sleep(0.02)

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=5.0) as client:
            n = 0
            while not stop.is_set():
                await self.post_until_acked(client, self.batch(n))
                n += 1


async def traffic_with_outages(url: str, outage: Callable[[], None]) -> list[Producer]:
    producers = [Producer(f"p{n}", url) for n in range(PRODUCERS)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(p.run(stop)) for p in producers]
    try:
        for _ in range(OUTAGES):
            await asyncio.sleep(RUN_S)
            await asyncio.to_thread(outage)
        await asyncio.sleep(RUN_S)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    return producers


def check_log_and_state(redis_url: str, producers: list[Producer]) -> None:
    keys = Keys(PREFIX)
    acked = [i for p in producers for i in p.acked]
    assert len(acked) == len(set(acked))
    assert sum(p.retries for p in producers) > 0, "no request was disturbed: test proves nothing"
    settings = Settings(redis_url=redis_url, key_prefix=PREFIX)
    logged = Counter(f["event_id"] for f in log_fields(settings))
    popularity = live_counts(settings)
    client = redis.Redis.from_url(redis_url)
    try:
        histories = {}
        for u in range(USERS):
            raw = client.hgetall(keys.history(f"d{u}"))
            histories.update({i.decode(): v.decode() for i, v in raw.items()})
    finally:
        client.close()
    print(f"acked {len(acked)} events; {sum(p.retries for p in producers)} retries, "
          f"{sum(p.seen_duplicates for p in producers)} duplicates reported")
    twice = {i: c for i, c in logged.items() if c > 1}
    assert not twice, f"logged more than once: {list(twice)[:5]}"
    lost = set(acked) - set(logged)
    assert not lost, f"{len(lost)} acknowledged events missing from the log: {sorted(lost)[:5]}"
    assert set(logged) == set(acked), "every batch was retried until acknowledged"
    items = {f"it-{i}" for i in acked}
    assert {i for i, s in popularity.items() if s == 1} == items, "popularity counted once"
    assert set(histories) == items
    weights = {v.partition(":")[0] for v in histories.values()}
    assert weights == {"1"}, f"a view applied more than once: weights {weights}"


@pytest.fixture
def settings_env() -> dict[str, str]:
    return {"SOCIALREC_HISTORY_LEN": "1000"}


async def test_service_sigkilled_mid_traffic(own_redis: LocalRedis, serve,
                                             settings_env: dict[str, str]) -> None:
    server: ServeProcess = serve(own_redis.url, **settings_env).start()

    def kill_and_restart() -> None:
        server.kill()
        time.sleep(0.1)
        server.start()

    producers = await traffic_with_outages(server.url, kill_and_restart)
    check_log_and_state(own_redis.url, producers)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_redis_restarted_mid_traffic(own_redis: LocalRedis, serve, sig: int,
                                           settings_env: dict[str, str]) -> None:
    server: ServeProcess = serve(own_redis.url, **settings_env).start()

    def restart_redis() -> None:
        own_redis.stop(sig)
        time.sleep(0.1)
        own_redis.start()

    producers = await traffic_with_outages(server.url, restart_redis)
    check_log_and_state(own_redis.url, producers)
