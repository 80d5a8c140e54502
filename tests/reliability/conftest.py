"""Fixtures for the reliability tests: Redis servers these tests own (so they may stop, hang and
restart them) and the service as a real `socialrec serve` process (so it may be killed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.tools.local_redis import LocalRedis, free_port

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


def socialrec_command() -> list[str]:
    script = Path(sys.executable).with_name("socialrec")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())"]


class ServeProcess:
    """`socialrec serve` as a child process on a free loopback port; kill() and start() again
    reuse the port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SOCIALREC_")}
        self.env.update(env)
        self.env.setdefault("OMP_NUM_THREADS", "1")
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServeProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*socialrec_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parents[2])
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"socialrec serve did not start:\n{self.log()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, in-flight requests cut."""
        self.stop(signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(sig)
                try:
                    self.process.wait(15)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture
def serve(tmp_path: Path, artifacts_dir: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Factory of ServeProcess bound to this test's folder; every process started is stopped."""
    started: list[ServeProcess] = []

    def make(redis_url: str, **env: str) -> ServeProcess:
        server = ServeProcess({"SOCIALREC_REDIS_URL": redis_url,
                               "SOCIALREC_ARTIFACTS": str(artifacts_dir),
                               "SOCIALREC_KEY_PREFIX": PREFIX, **env},
                              tmp_path / f"serve-{len(started)}.log")
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()
