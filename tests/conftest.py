"""Shared fixtures: a real Redis (started here when none answers), a tiny model trained on
`socialrec synth` data once per session, and an app client on its own key prefix."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from app.config import Settings
from app.offline.load import load_into_redis
from app.offline.synth import write_synthetic_dataset
from app.tools.local_redis import LocalRedis, LocalRedisCluster, answers
from tests.support.auth import ADMIN_TOKEN
from tests.support.client import app_client

SYNTH = {"n_users": 300, "n_items": 400, "seed": 3}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse two tests with one node id: pytest-xdist schedules by node id, so it would run
    only one of them and report the others as nothing at all."""
    ids = Counter(item.nodeid for item in items)
    twice = sorted(nodeid for nodeid, n in ids.items() if n > 1)
    if twice:
        raise pytest.UsageError(f"tests share a node id (xdist would run one): {twice}")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's Redis when it answers (tests only touch their own key prefix), else a
    redis-server of our own on a free loopback port."""
    url = os.environ.get("SOCIALREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    if answers(url):
        yield url
        return
    with LocalRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A seed URL of a 3-master Redis Cluster of our own on free loopback ports, started on
    first use and stopped (exactly its processes) at the end of the session."""
    with LocalRedisCluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster.url


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A fresh key prefix per test; afterwards exactly the keys under it are deleted."""
    prefix = f"srtest-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(folder, **SYNTH)
    return folder


@pytest.fixture(scope="session")
def artifacts_dir(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.models import train_tiny

    return train_tiny(synth_dir, tmp_path_factory.mktemp("model") / "artifacts", seed=0)


@pytest.fixture(scope="session")
def second_artifacts_dir(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model (and model version) on the same data, to reload to."""
    from tests.support.models import train_tiny

    return train_tiny(synth_dir, tmp_path_factory.mktemp("second") / "artifacts", seed=1)


@pytest.fixture
def settings(redis_url: str, key_prefix: str, artifacts_dir: Path) -> Settings:
    return Settings(redis_url=redis_url, key_prefix=key_prefix, artifacts=artifacts_dir,
                    admin_token=ADMIN_TOKEN)


@pytest.fixture
def loaded(settings: Settings, synth_dir: Path) -> Settings:
    """Settings whose Redis prefix holds the synthetic users' histories and friends."""
    load_into_redis(settings.artifacts, synth_dir, settings=settings, progress=False)
    return settings


@pytest.fixture
async def client(loaded: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(loaded) as c:
        yield c
