"""Store tests run against a single Redis and against a Redis Cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.config import Settings
from app.store.redis_store import RedisStore, connect


@pytest.fixture(params=["single", "cluster"])
def store_settings(request: pytest.FixtureRequest, redis_url: str, key_prefix: str) -> Settings:
    if request.param == "cluster":
        return Settings(redis_url=request.getfixturevalue("redis_cluster_url"),
                        redis_cluster=True, key_prefix=key_prefix)
    return Settings(redis_url=redis_url, key_prefix=key_prefix)


@pytest.fixture
async def store(store_settings: Settings) -> AsyncIterator[RedisStore]:
    s = RedisStore(connect(store_settings), store_settings)
    yield s
    await s.close()
