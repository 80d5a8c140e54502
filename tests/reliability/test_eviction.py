"""A Redis whose maxmemory-policy may evict keys without a TTL loses histories silently: the
service warns at start-up and /readyz says why it is not ready. Against redis-servers of these
tests' own (the machine's shared Redis is never reconfigured)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import redis

from app.config import Settings
from app.store.redis_store import RedisStore, connect
from app.tools.local_redis import LocalRedis
from tests.support.client import app_client


async def test_readyz_refuses_an_evicting_redis_and_accepts_a_safe_one(
        own_redis: LocalRedis, own_settings: Settings) -> None:
    admin = redis.Redis.from_url(own_redis.url)
    try:
        async with app_client(own_settings) as client:
            assert (await client.get("/readyz")).status_code == 200, "noeviction: the default"
            for policy in ("allkeys-lru", "allkeys-lfu", "allkeys-random"):
                admin.config_set("maxmemory-policy", policy)
                answer = await client.get("/readyz")
                assert answer.status_code == 503
                reason = answer.json()["reason"]
                assert policy in reason and "noeviction" in reason and "histories" in reason
            for policy in ("volatile-lru", "volatile-ttl", "noeviction"):
                admin.config_set("maxmemory-policy", policy)
                assert (await client.get("/readyz")).status_code == 200, policy
    finally:
        admin.close()


async def test_start_up_warns_of_an_evicting_redis(tmp_path: Path, artifacts_dir: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with LocalRedis(tmp_path / "redis", extra=("--maxmemory-policy", "allkeys-lru")) as server:
        settings = Settings(redis_url=server.url, key_prefix="rel", artifacts=artifacts_dir)
        with caplog.at_level(logging.WARNING, logger="app.main"):
            async with app_client(settings):
                pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("allkeys-lru" in w and "lost silently" in w for w in warnings), warnings


async def test_every_cluster_primary_is_checked(redis_cluster_url: str) -> None:
    settings = Settings(redis_url=redis_cluster_url, redis_cluster=True)
    store = RedisStore(connect(settings), settings)
    try:
        assert await store.eviction_policies() == ["noeviction"] * 3
        assert await store.eviction_risk() is None
    finally:
        await store.close()
