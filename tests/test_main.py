"""The lifespan's background loops: they must outlive any one failure."""

from __future__ import annotations

import asyncio
import logging

import pytest
from asgi_lifespan import LifespanManager
from redis.exceptions import ConnectionError as RedisConnectionError

from app.config import Settings
from app.main import _every, create_app
from app.store.catalog import CatalogItem
from app.tools.local_redis import free_port


async def test_a_background_loop_survives_store_errors_and_unexpected_ones(
        caplog: pytest.LogCaptureFixture) -> None:
    stopping = asyncio.Event()
    failures: list[Exception] = [RedisConnectionError("away"),
                                 AttributeError("'NoneType' object has no attribute 'writelines'")]
    ticks = 0

    async def poll() -> None:
        nonlocal ticks
        ticks += 1
        if failures:
            raise failures.pop(0)
        if ticks == 4:
            stopping.set()

    with caplog.at_level(logging.ERROR, logger="app.main"):
        await asyncio.wait_for(_every(0.001, stopping, poll), timeout=5)

    assert ticks == 4  # two failing ticks, then the loop kept going until asked to stop
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1  # the unexpected failure is logged; a store error is expected
    assert "poll" in errors[0].getMessage()


async def test_a_failing_loop_backs_off_and_is_quick_again_after_a_success() -> None:
    stopping = asyncio.Event()
    healthy = False
    calls = 0

    async def poll() -> None:
        nonlocal calls
        calls += 1
        if not healthy:
            raise RedisConnectionError("node down")

    loop = asyncio.create_task(_every(0.02, stopping, poll, max_period_s=0.32))
    await asyncio.sleep(1.5)
    failing, healthy = calls, True
    await asyncio.sleep(1.5)
    stopping.set()
    await asyncio.wait_for(loop, timeout=5)
    # failing: waits of 0.04, 0.08, 0.16, then 0.32 s — about 7 calls, not 75; healthy again:
    # after at most one 0.32 s wait, every 0.02 s — about 60 calls
    assert failing <= 15
    assert calls - failing >= 15


async def test_the_catalogue_poll_backs_off_while_redis_is_unreachable(
        settings: Settings) -> None:
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    app = create_app(down)
    async with LifespanManager(app):
        store = app.state.socialrec.catalogue.store
        reads = 0
        changes = store.changes

        async def counted(after: int, limit: int) -> tuple[list[CatalogItem], int]:
            nonlocal reads
            reads += 1
            return await changes(after, limit)

        store.changes = counted
        await asyncio.sleep(3.0)
    # every 0.25 s that would be 12 reads; backing off (0.5, 1, 2 s) it is 3 or 4
    assert reads <= 6
