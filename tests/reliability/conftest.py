"""Fixtures for the reliability tests: Redis servers these tests own (so they may stop, hang and
restart them) and the service as a real `socialrec serve` process (so it may be killed)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.config import Settings
from app.tools.local_redis import LocalRedis
from tests.support.serve import ServeProcess

PREFIX = "rel"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[LocalRedis]:
    """A redis-server of this test alone, persisted like production (AOF, fsync always), so a
    restart on the same port keeps what was acknowledged."""
    server = LocalRedis(tmp_path / "redis", appendonly=True).start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.send_signal(signal.SIGCONT)  # in case a test left it hung
        server.stop()


@pytest.fixture
def own_settings(own_redis: LocalRedis, artifacts_dir: Path) -> Settings:
    return Settings(redis_url=own_redis.url, key_prefix=PREFIX, artifacts=artifacts_dir)


@pytest.fixture
def serve(tmp_path: Path, artifacts_dir: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Factory of ServeProcess bound to this test's folder; every process started is stopped."""
    started: list[ServeProcess] = []

    def make(redis_url: str, workers: int = 1, **env: str) -> ServeProcess:
        server = ServeProcess({"SOCIALREC_REDIS_URL": redis_url,
                               "SOCIALREC_ARTIFACTS": str(artifacts_dir),
                               "SOCIALREC_KEY_PREFIX": PREFIX, **env},
                              tmp_path / f"serve-{len(started)}.log", workers)
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()
