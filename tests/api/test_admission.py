"""SOCIALREC_RECOMMEND_CONCURRENCY: a process works on at most that many GET /recommend
requests at once; the others wait their turn (counted in socialrec_recommend_waiting) and are
all answered."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.api.routes.recommend import CLIENT_GONE
from app.config import Settings
from app.serving import online
from tests.support import data
from tests.support.auth import CATALOG, CATALOG_TOKEN
from tests.support.client import app_client, get_then_leave, running_app

REQUESTS = 5


async def waiting(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    found = re.search(r"^socialrec_recommend_waiting (\S+)$", text, re.MULTILINE)
    assert found is not None
    return float(found.group(1))


async def until(check: Any, what: str) -> None:
    for _ in range(500):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


@pytest.mark.parametrize("limit", [1, REQUESTS])
async def test_requests_past_the_limit_wait_their_turn_and_are_all_answered(
        loaded: Settings, synth_dir: Path, monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    users = sorted(data.histories(synth_dir))[:REQUESTS]
    real = online.recommend
    release = asyncio.Event()
    inside = most = 0

    async def held(*args: Any, **kwargs: Any) -> online.Served:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        try:
            await release.wait()
            return await real(*args, **kwargs)
        finally:
            inside -= 1

    monkeypatch.setattr(online, "recommend", held)
    async with app_client(loaded.model_copy(update={"recommend_concurrency": limit})) as client:
        sent = [asyncio.create_task(client.get(f"/recommend/{u}")) for u in users]

        async def settled() -> bool:
            return inside == limit and await waiting(client) == REQUESTS - limit

        await until(settled, f"{limit} inside, the others waiting")
        release.set()
        answers = await asyncio.gather(*sent)
        assert [a.status_code for a in answers] == [200] * REQUESTS
        assert [a.json()["user_id"] for a in answers] == users
        assert most == limit
        assert await waiting(client) == 0


async def test_a_request_that_waits_past_the_deadline_gets_the_degraded_popular_list(
        loaded: Settings, synth_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = sorted(data.histories(synth_dir))[:2]
    real = online.recommend
    release = asyncio.Event()
    inside = 0

    async def held(*args: Any, **kwargs: Any) -> online.Served:
        nonlocal inside
        inside += 1
        await release.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(online, "recommend", held)
    settings = loaded.model_copy(update={"recommend_concurrency": 1, "recommend_wait_s": 0.05})
    async with app_client(settings) as client:
        busy = asyncio.create_task(client.get(f"/recommend/{first}"))

        async def entered() -> bool:
            return inside == 1

        await until(entered, "the first request inside")
        # bounded: without the deadline this request would wait for the first one for ever
        shed = await asyncio.wait_for(client.get(f"/recommend/{second}", params={"k": 5}), 10)
        assert shed.status_code == 200
        body = shed.json()
        assert body["degraded"] is True and body["strategy"] == "popular"
        assert len(body["items"]) == 5
        assert await waiting(client) == 0
        assert 'socialrec_fallback_total{reason="overloaded"} 1.0' in \
            (await client.get("/metrics")).text
        release.set()
        answered = (await busy).json()
        assert answered["degraded"] is False and answered["strategy"] != "popular"
        assert inside == 1  # the shed request never reached the pipeline


async def test_shed_answers_follow_the_catalogue(loaded: Settings, synth_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Shed answers are written once per k and rendering, and written again when the
    catalogue changes: a withdrawn item leaves them at once."""
    first, second = sorted(data.histories(synth_dir))[:2]
    real = online.recommend
    release = asyncio.Event()

    async def held(*args: Any, **kwargs: Any) -> online.Served:
        await release.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(online, "recommend", held)
    settings = loaded.model_copy(update={"recommend_concurrency": 1, "recommend_wait_s": 0.02,
                                         "catalog_token": CATALOG_TOKEN})
    async with app_client(settings) as client:
        busy = asyncio.create_task(client.get(f"/recommend/{first}"))

        async def shed(**params: Any) -> list[str]:
            body = (await asyncio.wait_for(client.get(f"/recommend/{second}", params=params),
                                           10)).json()
            assert body["degraded"] is True
            return [i["item_id"] for i in body["items"]]

        before = await shed(k=5)
        assert await shed(k=5) == before
        assert len(await shed(k=8)) == 8
        put = await client.put(f"/items/{before[0]}", json={"available": False}, headers=CATALOG)
        assert put.status_code == 200
        after = await shed(k=5)
        assert before[0] not in after and after[:4] == before[1:]
        release.set()
        await busy


async def test_a_request_whose_client_left_while_it_waited_is_not_computed(
        loaded: Settings, synth_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under overload clients give up (their own timeouts): the requests they left behind
    must not spend the turns the others wait for."""
    first, second, third = sorted(data.histories(synth_dir))[:3]
    real = online.recommend
    release = asyncio.Event()
    computed: list[str] = []

    async def held(*args: Any, **kwargs: Any) -> online.Served:
        computed.append(args[2].user_id)
        await release.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(online, "recommend", held)
    settings = loaded.model_copy(update={"recommend_concurrency": 1, "recommend_wait_s": 0})
    async with running_app(settings) as (app, client):
        busy = asyncio.create_task(client.get(f"/recommend/{first}"))

        async def entered() -> bool:
            return computed == [first]

        await until(entered, "the first request inside")
        leave = asyncio.Event()
        left = asyncio.create_task(get_then_leave(app, f"/recommend/{second}", leave))
        stays = asyncio.create_task(client.get(f"/recommend/{third}"))

        async def both_waiting() -> bool:
            return await waiting(client) == 2

        await until(both_waiting, "two requests waiting")
        leave.set()
        release.set()
        assert await left == CLIENT_GONE
        assert (await busy).status_code == 200
        assert (await stays).json()["user_id"] == third
        assert computed == [first, third]
        assert await waiting(client) == 0
        assert ('socialrec_http_requests_total{method="GET",route="/recommend/{user_id}",'
                f'status="{CLIENT_GONE}"}} 1.0') in (await client.get("/metrics")).text
