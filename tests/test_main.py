"""The lifespan's background loops: they must outlive any one failure."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from app.main import _every


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
